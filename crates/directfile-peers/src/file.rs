//! `file`: the same random-write workload on directfile and its io_uring peers.
//!
//! Each system runs on its own, fresh thread with its natural executor: directfile on
//! `Driver::block_on` (its own, which waits in the ring), tokio-uring on `tokio_uring::start`,
//! glommio on a `LocalExecutor`, compio on its `Runtime`. On every one, `qd` tasks each loop
//! "pick a random block, write it, await the completion, record the latency" until the
//! deadline, so `qd` writes are in flight. Buffers are 4096-aligned and reused; each system
//! gets its own buffers of the same pseudo-random content.

use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::util::{self, json_number, median, Offsets};

pub struct Config {
    pub qd: usize,
    pub dsync: bool,
    pub runtime: Duration,
    pub size: u64,
    pub bs: usize,
    pub rounds: usize,
    pub only: Vec<String>,
    pub json: bool,
    pub path: PathBuf,
}

impl Config {
    fn blocks(&self) -> u64 {
        self.size / self.bs as u64
    }

    fn open_flags(&self) -> i32 {
        libc::O_DIRECT | if self.dsync { libc::O_DSYNC } else { 0 }
    }
}

const SYSTEMS: [&str; 5] = [
    "directfile-uring",
    "directfile-threads",
    "tokio-uring",
    "glommio",
    "compio",
];

/// What one system did in one round.
struct Run {
    /// Per-op latency in nanoseconds.
    histogram: Histogram<u64>,
    ops: u64,
    elapsed: Duration,
}

/// One system's numbers (one round, or the medians over rounds).
#[derive(Clone, Debug)]
struct Row {
    system: String,
    ops: f64,
    runtime_s: f64,
    iops: f64,
    bw: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

type TaskResult = Result<(Histogram<u64>, u64), String>;

fn merge(system: &str, results: Vec<TaskResult>, elapsed: Duration) -> Result<Run, String> {
    let mut histogram = new_histogram();
    let mut ops = 0;
    for result in results {
        let (h, n) = result.map_err(|e| format!("{system}: {e}"))?;
        histogram.add(&h).map_err(|e| format!("{system}: {e}"))?;
        ops += n;
    }
    Ok(Run {
        histogram,
        ops,
        elapsed,
    })
}

fn record(histogram: &mut Histogram<u64>, started: Instant, finished: Instant) {
    let nanos = (finished - started).as_nanos().min(u128::from(u64::MAX)) as u64;
    histogram.saturating_record(nanos.max(1));
}

fn check(result: io::Result<usize>, bs: usize, offset: u64) -> Result<(), String> {
    match result {
        Ok(n) if n == bs => Ok(()),
        Ok(n) => Err(format!("short write at {offset}: {n} of {bs} bytes")),
        Err(e) => Err(format!("write at {offset}: {e}")),
    }
}

// --------------------------------------------------------------------------------------------
// The systems

fn run_directfile(
    choice: directfile::BackendChoice,
    config: &Config,
    path: &Path,
) -> Result<Run, String> {
    use directfile::{Driver, OpenOptions};
    let system = format!("directfile-{choice:?}").to_lowercase();
    // Run on `Driver::block_on` (below): the thread that submits is the one that waits.
    let driver = Driver::builder()
        .queue_depth(config.qd)
        .backend(choice)
        .cooperative_completions(true)
        .build()
        .map_err(|e| format!("{system}: cannot start the driver: {e}"))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .direct(true)
        .write_through(config.dsync)
        .driver(&driver)
        .open(path)
        .map_err(|e| format!("{system}: open: {e}"))?;
    let pool = driver.buf_pool(config.qd, config.bs, file.alignment().buffer_align());
    let (bs, blocks) = (config.bs, config.blocks());
    let start = Instant::now();
    let deadline = start + config.runtime;
    let mut tasks = Vec::with_capacity(config.qd);
    for task in 0..config.qd {
        let mut buf = pool
            .try_get()
            .ok_or_else(|| format!("{system}: buffer pool short"))?;
        util::fill(buf.as_full_mut(), task as u64 + 1);
        buf.set_len(bs);
        let file = &file;
        tasks.push(async move {
            let mut offsets = Offsets::new(task, blocks, bs);
            let mut histogram = new_histogram();
            let mut ops = 0u64;
            loop {
                let offset = offsets.next_offset();
                let started = Instant::now();
                let (result, returned) = file.write_at(buf, offset).await;
                buf = returned;
                let finished = Instant::now();
                check(result.map_err(io::Error::other), bs, offset)?;
                record(&mut histogram, started, finished);
                ops += 1;
                if finished >= deadline {
                    return Ok((histogram, ops));
                }
            }
        });
    }
    let results = driver.block_on(futures::future::join_all(tasks));
    let elapsed = start.elapsed();
    merge(&system, results, elapsed)
}

fn run_tokio_uring(config: &Config, path: &Path) -> Result<Run, String> {
    let (bs, blocks, qd, runtime) = (config.bs, config.blocks(), config.qd, config.runtime);
    let flags = config.open_flags();
    let path = path.to_path_buf();
    let entries = (qd.next_power_of_two() as u32).max(256);
    tokio_uring::builder().entries(entries).start(async move {
        let file = tokio_uring::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(&path)
            .await
            .map_err(|e| format!("tokio-uring: open: {e}"))?;
        let file = Rc::new(file);
        let start = Instant::now();
        let deadline = start + runtime;
        let handles: Vec<_> = (0..qd)
            .map(|task| {
                let file = Rc::clone(&file);
                let mut buf = util::leaked_aligned(bs, task as u64 + 1);
                tokio_uring::spawn(async move {
                    let mut offsets = Offsets::new(task, blocks, bs);
                    let mut histogram = new_histogram();
                    let mut ops = 0u64;
                    loop {
                        let offset = offsets.next_offset();
                        let started = Instant::now();
                        let (result, returned) = file.write_at(buf, offset).submit().await;
                        buf = returned;
                        let finished = Instant::now();
                        check(result, bs, offset)?;
                        record(&mut histogram, started, finished);
                        ops += 1;
                        if finished >= deadline {
                            return Ok((histogram, ops));
                        }
                    }
                })
            })
            .collect();
        let mut results = Vec::with_capacity(qd);
        for handle in handles {
            results.push(handle.await.map_err(|e| format!("task: {e}"))?);
        }
        let elapsed = start.elapsed();
        if let Ok(file) = Rc::try_unwrap(file) {
            let _ = file.close().await;
        }
        merge("tokio-uring", results, elapsed)
    })
}

fn run_glommio(config: &Config, path: &Path) -> Result<Run, String> {
    use glommio::{LocalExecutorBuilder, Placement};
    let (bs, blocks, qd, runtime) = (config.bs, config.blocks(), config.qd, config.runtime);
    let dsync = if config.dsync { libc::O_DSYNC } else { 0 };
    let path = path.to_path_buf();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("glommio-peer")
        .spawn(move || async move {
            // dma_open adds O_DIRECT itself.
            let file = glommio::io::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(dsync)
                .dma_open(&path)
                .await
                .map_err(|e| format!("glommio: open: {e}"))?;
            let file = Rc::new(file);
            let start = Instant::now();
            let deadline = start + runtime;
            let tasks: Vec<_> = (0..qd)
                .map(|task| {
                    let file = Rc::clone(&file);
                    glommio::spawn_local(async move {
                        let mut buffer = file.alloc_dma_buffer(bs);
                        util::fill(buffer.as_bytes_mut(), task as u64 + 1);
                        let buffer = Rc::new(buffer);
                        let mut offsets = Offsets::new(task, blocks, bs);
                        let mut histogram = new_histogram();
                        let mut ops = 0u64;
                        loop {
                            let offset = offsets.next_offset();
                            let started = Instant::now();
                            let result = file.write_rc_at(Rc::clone(&buffer), offset).await;
                            let finished = Instant::now();
                            check(result.map_err(io::Error::from), bs, offset)?;
                            record(&mut histogram, started, finished);
                            ops += 1;
                            if finished >= deadline {
                                return Ok((histogram, ops));
                            }
                        }
                    })
                })
                .collect();
            let mut results = Vec::with_capacity(qd);
            for task in tasks {
                results.push(task.await);
            }
            let elapsed = start.elapsed();
            let _ = file.close_rc().await;
            merge("glommio", results, elapsed)
        })
        .map_err(|e| format!("glommio: cannot start an executor: {e}"))?;
    handle
        .join()
        .map_err(|e| format!("glommio: executor failed: {e}"))?
}

fn run_compio(config: &Config, path: &Path) -> Result<Run, String> {
    use compio::io::AsyncWriteAt;
    let (bs, blocks, qd, runtime) = (config.bs, config.blocks(), config.qd, config.runtime);
    let flags = config.open_flags();
    let path = path.to_path_buf();
    let rt = compio::runtime::Runtime::new()
        .map_err(|e| format!("compio: cannot start the runtime: {e}"))?;
    let driver = format!("{:?}", rt.driver_type());
    if driver != "IoUring" {
        return Err(format!("compio: runtime driver is {driver}, not io_uring"));
    }
    rt.block_on(async move {
        let file = compio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(&path)
            .await
            .map_err(|e| format!("compio: open: {e}"))?;
        let file = Rc::new(file);
        let start = Instant::now();
        let deadline = start + runtime;
        let handles: Vec<_> = (0..qd)
            .map(|task| {
                let file = Rc::clone(&file);
                let mut buf = util::leaked_aligned(bs, task as u64 + 1);
                compio::runtime::spawn(async move {
                    let mut offsets = Offsets::new(task, blocks, bs);
                    let mut histogram = new_histogram();
                    let mut ops = 0u64;
                    let mut writer: &compio::fs::File = &file;
                    loop {
                        let offset = offsets.next_offset();
                        let started = Instant::now();
                        let compio::BufResult(result, returned) =
                            writer.write_at(buf, offset).await;
                        buf = returned;
                        let finished = Instant::now();
                        check(result, bs, offset)?;
                        record(&mut histogram, started, finished);
                        ops += 1;
                        if finished >= deadline {
                            return Ok((histogram, ops));
                        }
                    }
                })
            })
            .collect();
        let mut results = Vec::with_capacity(qd);
        for handle in handles {
            results.push(handle.await.map_err(|e| format!("task: {e:?}"))?);
        }
        let elapsed = start.elapsed();
        if let Ok(file) = Rc::try_unwrap(file) {
            let _ = file.close().await;
        }
        merge("compio", results, elapsed)
    })
}

fn run_system(system: &str, config: &Config, path: &Path) -> Result<Run, String> {
    use directfile::BackendChoice;
    match system {
        "directfile-uring" => run_directfile(BackendChoice::Uring, config, path),
        "directfile-threads" => run_directfile(BackendChoice::Threads, config, path),
        "tokio-uring" => run_tokio_uring(config, path),
        "glommio" => run_glommio(config, path),
        "compio" => run_compio(config, path),
        other => Err(format!("unknown system {other:?}")),
    }
}

/// Runs `system` on a fresh thread (each runtime keeps thread-local state), catching panics.
fn run_isolated(system: &'static str, config: &Config, path: &Path) -> Result<Run, String> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name(system.to_string())
            .spawn_scoped(scope, || run_system(system, config, path))
            .map_err(|e| format!("{system}: cannot spawn a thread: {e}"))?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".to_string());
                Err(format!("{system}: panicked: {message}"))
            }
        }
    })
}

// --------------------------------------------------------------------------------------------
// Driver: lay out, rounds, table

/// Writes the whole file with data (1 MiB O_DIRECT writes) and syncs it, unless it is already
/// at least `size` long.
fn lay_out(path: &Path, config: &Config) -> io::Result<()> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    if file.metadata()?.len() >= config.size {
        return Ok(());
    }
    let chunk = ((1 << 20) / config.bs).max(1) * config.bs;
    let buffer = util::leaked_aligned(chunk, 0xda7a);
    let mut offset = 0u64;
    while offset < config.size {
        let length = chunk.min((config.size - offset) as usize);
        file.write_all_at(&buffer[..length], offset)?;
        offset += length as u64;
    }
    file.sync_all()
}

fn row(system: &str, config: &Config, run: &Run) -> Row {
    let seconds = run.elapsed.as_secs_f64();
    let us = |q: f64| run.histogram.value_at_quantile(q) as f64 / 1000.0;
    let iops = run.ops as f64 / seconds;
    Row {
        system: system.to_string(),
        ops: run.ops as f64,
        runtime_s: seconds,
        iops,
        bw: iops * config.bs as f64,
        p50: us(0.50),
        p99: us(0.99),
        p999: us(0.999),
        max: run.histogram.max() as f64 / 1000.0,
    }
}

fn median_row(rows: &[Row]) -> Row {
    let field = |get: fn(&Row) -> f64| median(&mut rows.iter().map(get).collect::<Vec<_>>());
    Row {
        system: rows[0].system.clone(),
        ops: field(|r| r.ops),
        runtime_s: field(|r| r.runtime_s),
        iops: field(|r| r.iops),
        bw: field(|r| r.bw),
        p50: field(|r| r.p50),
        p99: field(|r| r.p99),
        p999: field(|r| r.p999),
        max: field(|r| r.max),
    }
}

fn to_json(row: &Row, config: &Config) -> String {
    format!(
        concat!(
            "{{\"backend\":\"{}\",\"rw\":\"randwrite\",\"bs_bytes\":{},\"qd\":{},\"dsync\":{},",
            "\"runtime_s\":{},\"ops\":{},\"iops\":{},\"bw_bytes_per_s\":{},\"lat_us_p50\":{},",
            "\"lat_us_p99\":{},\"lat_us_p999\":{},\"lat_us_max\":{}}}"
        ),
        row.system,
        config.bs,
        config.qd,
        config.dsync,
        json_number(row.runtime_s, 3),
        row.ops.round() as u64,
        json_number(row.iops, 1),
        json_number(row.bw, 1),
        json_number(row.p50, 1),
        json_number(row.p99, 1),
        json_number(row.p999, 1),
        json_number(row.max, 1),
    )
}

pub fn main(config: Config) -> Result<(), String> {
    if config.bs == 0 || config.bs % 4096 != 0 {
        return Err(format!(
            "--bs {} must be a multiple of 4096 (the buffer alignment used for every system)",
            config.bs
        ));
    }
    if config.size < config.bs as u64 {
        return Err("--size is smaller than --bs".to_string());
    }
    let systems: Vec<&'static str> = if config.only.is_empty() {
        SYSTEMS.to_vec()
    } else {
        let mut picked = Vec::new();
        for name in &config.only {
            let system = SYSTEMS
                .iter()
                .find(|s| **s == name.as_str())
                .ok_or_else(|| format!("unknown system {name:?}: one of {SYSTEMS:?}"))?;
            picked.push(*system);
        }
        picked
    };
    let (path, scratch) = if config.path.is_dir() {
        (
            config
                .path
                .join(format!("directfile-peers-{}.dat", std::process::id())),
            true,
        )
    } else {
        (config.path.clone(), false)
    };
    eprintln!(
        "laying out {} ({} MiB) ...",
        path.display(),
        config.size >> 20
    );
    lay_out(&path, &config).map_err(|e| format!("cannot lay out {}: {e}", path.display()))?;
    let outcome = rounds(&config, &systems, &path);
    if scratch {
        let _ = fs::remove_file(&path);
    }
    let (medians, left_out) = outcome;
    report(&config, &medians, &left_out);
    if medians.is_empty() {
        return Err("no system ran".to_string());
    }
    Ok(())
}

type Medians = Vec<Row>;
type LeftOut = Vec<(String, String)>;

fn rounds(config: &Config, systems: &[&'static str], path: &Path) -> (Medians, LeftOut) {
    let mut left_out: LeftOut = Vec::new();
    let mut per_system: Vec<Vec<Row>> = vec![Vec::new(); systems.len()];
    for round in 0..config.rounds {
        // Alternate: rotate the order every round.
        for k in 0..systems.len() {
            let index = (k + round) % systems.len();
            let system = systems[index];
            if left_out.iter().any(|(s, _)| s == system) {
                continue;
            }
            match run_isolated(system, config, path) {
                Ok(run) => {
                    let r = row(system, config, &run);
                    eprintln!(
                        "round {}/{} {:<19} {:>9.0} IOPS  p50 {:>8.1} us  p99 {:>8.1} us",
                        round + 1,
                        config.rounds,
                        system,
                        r.iops,
                        r.p50,
                        r.p99
                    );
                    per_system[index].push(r);
                }
                Err(reason) => {
                    eprintln!("round {} {system}: left out: {reason}", round + 1);
                    left_out.push((system.to_string(), reason));
                }
            }
        }
    }
    let medians = systems
        .iter()
        .enumerate()
        .filter(|(_, s)| !left_out.iter().any(|(l, _)| l == **s))
        .filter(|(i, _)| !per_system[*i].is_empty())
        .map(|(i, _)| median_row(&per_system[i]))
        .collect();
    (medians, left_out)
}

fn report(config: &Config, medians: &[Row], left_out: &[(String, String)]) {
    if config.json {
        for row in medians {
            println!("{}", to_json(row, config));
        }
    } else {
        let base = medians.iter().find(|r| r.system == "directfile-uring");
        println!(
            "randwrite bs={} qd={} dsync={} runtime={:.1}s rounds={} (medians)",
            config.bs,
            config.qd,
            config.dsync,
            config.runtime.as_secs_f64(),
            config.rounds
        );
        println!(
            "{:<19} {:>10} {:>10} {:>10} {:>10} {:>11} {:>11}",
            "system", "IOPS", "MiB/s", "p50 us", "p99 us", "IOPS/df", "p50/df"
        );
        for row in medians {
            let (iops_ratio, p50_ratio) = match base {
                Some(b) => (
                    format!("{:.2}x", row.iops / b.iops),
                    format!("{:.2}x", row.p50 / b.p50),
                ),
                None => ("-".to_string(), "-".to_string()),
            };
            println!(
                "{:<19} {:>10.0} {:>10.1} {:>10.1} {:>10.1} {:>11} {:>11}",
                row.system,
                row.iops,
                row.bw / (1024.0 * 1024.0),
                row.p50,
                row.p99,
                iops_ratio,
                p50_ratio
            );
        }
    }
    for (system, reason) in left_out {
        eprintln!("left out {system}: {reason}");
    }
}
