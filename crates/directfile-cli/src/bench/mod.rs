//! `directfile bench`: validate the workload, lay the file out, run each backend (alternating
//! them over rounds with --compare), and print a table or JSON lines, plus an optional plot.

pub mod backends;
pub mod directfile_backend;
pub mod stats;
pub mod workload;

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::args::{BackendArg, BenchArgs, ExecutorArg};
use crate::bench::stats::{median_measurement, Measurement};
use crate::bench::workload::{DriverTuning, Workload};
use crate::device;
use crate::error::{cli_error, CliResult};
use crate::fio;
use crate::plot;
use crate::progress::Progress;
use crate::sys;
use crate::tempfile::BenchFile;
use crate::units::{format_bytes, format_count};

/// The page size the baselines' buffers are aligned to (at least).
const PAGE: u64 = 4096;

/// Everything a bench can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// directfile with the backend it picks itself.
    Auto,
    /// directfile's io_uring driver.
    Uring,
    /// directfile's io_uring driver with its futures on another executor than
    /// `Driver::block_on` (the --compare rows): `futures` is the path of any executor without
    /// a reactor (the driver's reaper thread); on tokio and smol the runtime's reactor reaps.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // --compare's rows on Linux
    UringOn(ExecutorArg),
    /// directfile's completion-port driver (Windows).
    Iocp,
    /// The completion-port driver with its futures on another executor than
    /// `Driver::block_on` (the --compare rows on Windows): the port's reaper thread wakes
    /// them on every one (no runtime reactor there: `crates/directfile/PLATFORMS.md`).
    #[cfg_attr(not(windows), allow(dead_code))] // --compare's rows on Windows
    IocpOn(ExecutorArg),
    /// directfile's thread-pool driver.
    Threads,
    Std,
    Tokio,
    Fio,
}

/// The platform's own directfile driver on `Driver::block_on` and on the other executors (the
/// `--compare` rows).
#[cfg(target_os = "linux")]
const NATIVE: [Backend; 4] = [
    Backend::Uring,
    Backend::UringOn(ExecutorArg::Futures),
    Backend::UringOn(ExecutorArg::Tokio),
    Backend::UringOn(ExecutorArg::Smol),
];
#[cfg(windows)]
const NATIVE: [Backend; 4] = [
    Backend::Iocp,
    Backend::IocpOn(ExecutorArg::Futures),
    Backend::IocpOn(ExecutorArg::Tokio),
    Backend::IocpOn(ExecutorArg::Smol),
];

impl Backend {
    fn from_arg(arg: BackendArg) -> Backend {
        match arg {
            BackendArg::Auto => Backend::Auto,
            BackendArg::Uring => Backend::Uring,
            BackendArg::Iocp => Backend::Iocp,
            BackendArg::Threads => Backend::Threads,
            BackendArg::Std => Backend::Std,
            BackendArg::Tokio => Backend::Tokio,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Uring | Backend::UringOn(ExecutorArg::Own) => "uring",
            Backend::UringOn(ExecutorArg::Futures) => "uring+futures",
            Backend::UringOn(ExecutorArg::Tokio) => "uring+tokio",
            Backend::UringOn(ExecutorArg::Smol) => "uring+smol",
            Backend::Iocp | Backend::IocpOn(ExecutorArg::Own) => "iocp",
            Backend::IocpOn(ExecutorArg::Futures) => "iocp+futures",
            Backend::IocpOn(ExecutorArg::Tokio) => "iocp+tokio",
            Backend::IocpOn(ExecutorArg::Smol) => "iocp+smol",
            Backend::Threads => "threads",
            Backend::Std => "std",
            Backend::Tokio => "tokio",
            Backend::Fio => "fio",
        }
    }

    fn run(self, path: &Path, workload: &Workload) -> CliResult<Measurement> {
        match self {
            Backend::Auto | Backend::Uring | Backend::Iocp | Backend::Threads => {
                directfile_backend::run(self, path, workload)
            }
            Backend::UringOn(executor) | Backend::IocpOn(executor) => {
                let driver = if matches!(self, Backend::UringOn(_)) {
                    Backend::Uring
                } else {
                    Backend::Iocp
                };
                let workload = Workload {
                    executor,
                    ..*workload
                };
                directfile_backend::run(driver, path, &workload)
            }
            Backend::Std => backends::run_std(path, workload),
            Backend::Tokio => backends::run_tokio(path, workload),
            Backend::Fio => fio::run(path, workload),
        }
    }
}

pub fn run(args: BenchArgs) -> CliResult<()> {
    // Checks that need no file first, so bad input never creates one.
    if args.size < args.bs {
        return Err(cli_error!(
            "--size {} ({}) is smaller than --bs {} ({}): the file must hold at least one block",
            args.size,
            format_bytes(args.size),
            args.bs,
            format_bytes(args.bs)
        ));
    }
    if args.bs > 1 << 30 {
        return Err(cli_error!("--bs {} is larger than 1 GiB", args.bs));
    }
    if let Some(plot_path) = &args.plot {
        let parent = plot_path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(cli_error!(
                "--plot {}: directory {} does not exist",
                plot_path.display(),
                parent.display()
            ));
        }
    }

    let target = BenchFile::resolve(args.path.as_deref())?;
    let path = target.path();
    let (memory_align, offset_align, align_source) = device::direct_io_alignment(path);
    if args.bs % offset_align != 0 {
        return Err(cli_error!(
            "--bs {} is not a multiple of the direct-I/O alignment {} bytes of files in {} (from {})",
            args.bs,
            offset_align,
            target.directory().display(),
            align_source.as_str()
        ));
    }
    let workload = Workload {
        rw: args.rw,
        bs: args.bs as usize,
        qd: args.qd as usize,
        // Whole blocks only: 10m with --bs 3m runs over 9 MiB.
        size: args.size / args.bs * args.bs,
        runtime: args.runtime,
        dsync: args.dsync,
        // Page-aligned, as fio's buffers and directfile's own (`Alignment::buffer_align`): a
        // 4 KiB buffer on a 512 B boundary straddles two pages, so each request carries two
        // segments, which cost the baselines 5 µs of p50 per write at QD1 on the virtio disk.
        memory_align: memory_align.max(PAGE) as usize,
        executor: args.executor,
        tuning: DriverTuning {
            spin: args.spin,
            ring_only: args.ring_only,
        },
    };
    check_direct_open(path, &workload)?;

    {
        let done = Arc::new(AtomicU64::new(0));
        let progress = Progress::bytes(
            format!("laying out {}", path.display()),
            workload.size,
            Arc::clone(&done),
        );
        workload::lay_out(path, &workload, |bytes| {
            done.store(bytes, Ordering::Relaxed)
        })
        .map_err(|err| cli_error!("cannot lay out {}: {err}", path.display()))?;
        progress.finish();
    }

    let (backends, rounds) = if args.compare {
        let mut backends = NATIVE.to_vec();
        backends.extend([Backend::Threads, Backend::Std, Backend::Tokio]);
        if fio::is_installed() {
            backends.push(Backend::Fio);
        } else {
            eprintln!(
                "directfile: fio is not installed: comparing without it (apt-get install fio)"
            );
        }
        (backends, args.rounds as usize)
    } else {
        (vec![Backend::from_arg(args.backend)], 1)
    };

    let mut rounds_by_backend: Vec<Vec<Measurement>> = vec![Vec::new(); backends.len()];
    for round in 0..rounds {
        for index in round_order(backends.len(), round) {
            let backend = backends[index];
            let label = if rounds > 1 {
                format!("{:>7} round {}/{}", backend.name(), round + 1, rounds)
            } else {
                format!("{:>7}", backend.name())
            };
            let progress = Progress::start(label, workload.runtime);
            let measurement = backend.run(path, &workload)?;
            progress.finish();
            rounds_by_backend[index].push(measurement);
        }
    }
    let results: Vec<Measurement> = rounds_by_backend
        .iter()
        .map(|rounds| median_measurement(rounds))
        .collect();

    if args.json {
        for result in &results {
            println!("{}", result.to_json());
        }
    } else {
        let file_system = file_system_label(path);
        println!(
            "{} {} QD{}{} on {} ({}, {}; direct-I/O alignment {} B), {:.1} s per run{}{}",
            workload.rw,
            format_bytes(workload.bs as u64),
            workload.qd,
            if workload.dsync { " O_DSYNC" } else { "" },
            path.display(),
            format_bytes(workload.size),
            file_system,
            offset_align,
            workload.runtime.as_secs_f64(),
            workload
                .tuning
                .describe()
                .map_or_else(String::new, |tuning| format!(", {tuning}")),
            if rounds > 1 {
                format!(", {rounds} rounds alternated, medians")
            } else {
                String::new()
            }
        );
        print!(
            "{}",
            table(&results, &paired_ratios(&backends, &rounds_by_backend))
        );
        if rounds > 1 && backends.contains(&Backend::Fio) {
            println!("x fio: the median of a backend's per-round ratios to that round's fio (paired, so the device's drift between rounds cancels)");
            println!("per round: IOPS, and x that round's fio (the device's phase shows in fio's own rate)");
            print!("{}", rounds_table(&backends, &rounds_by_backend));
        }
    }

    if let Some(plot_path) = &args.plot {
        fs::write(plot_path, plot::render(&results))
            .map_err(|err| cli_error!("cannot write {}: {err}", plot_path.display()))?;
        if !args.json {
            println!("plot written to {}", plot_path.display());
        }
    }
    drop(target);
    Ok(())
}

/// The order in which round `round` runs `count` backends: a walk through the list that starts
/// at `round` and steps by the round's stride, a number coprime with `count` (1, then the next
/// ones, cycled). A plain rotation would keep every backend's neighbours the same in every
/// round, so whatever one run leaves in the device (the host's dirty cache after a fast writer,
/// say) would always fall on the same next run; with the strides each backend starts a round
/// first or late and follows different ones.
fn round_order(count: usize, round: usize) -> Vec<usize> {
    if count == 0 {
        return Vec::new();
    }
    let strides: Vec<usize> = (1..count.max(2))
        .filter(|&stride| gcd(stride, count) == 1)
        .collect();
    let stride = strides[round % strides.len()];
    (0..count)
        .map(|step| (round + step * stride) % count)
        .collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The file system under `path` for the table's title: its name, else its magic number.
#[cfg(unix)]
fn file_system_label(path: &Path) -> String {
    sys::file_system_magic(path)
        .ok()
        .map(|magic| {
            sys::file_system_name(magic)
                .map(str::to_string)
                .unwrap_or_else(|| format!("{magic:#x}"))
        })
        .unwrap_or_else(|| "unknown file system".to_string())
}

/// The file system under `path` for the table's title: its name as the volume says it.
#[cfg(windows)]
fn file_system_label(path: &Path) -> String {
    sys::file_system_name_of(path).unwrap_or_else(|_| "unknown file system".to_string())
}

/// Opens the file with O_DIRECT (and O_DSYNC) once, to turn a refusal into a clear message.
fn check_direct_open(path: &Path, workload: &Workload) -> CliResult<()> {
    match workload.open_std(path) {
        Ok(_) => Ok(()),
        Err(err) if err.raw_os_error() == Some(sys::DIRECT_REFUSED) => Err(cli_error!(
            "{}: this file system refuses {} ({err}); pass a PATH on {}",
            path.display(),
            if cfg!(windows) {
                "FILE_FLAG_NO_BUFFERING"
            } else {
                "O_DIRECT"
            },
            sys::DISK_FILE_SYSTEMS
        )),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => Err(cli_error!(
            "{}: permission denied opening it read-write",
            path.display()
        )),
        Err(err) => Err(cli_error!("cannot open {}: {err}", path.display())),
    }
}

/// A backend's ratios to fio: IOPS and p50 latency, each the median over the rounds of its
/// ratio to the same round's fio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FioRatios {
    pub iops: f64,
    pub lat_p50: f64,
}

/// Each backend's [`FioRatios`], `None` for all when fio did not run. Pairing each run with
/// its own round's fio cancels the device's slow drift, which a ratio of the two medians keeps
/// whenever the phase changed while the rounds ran.
pub fn paired_ratios(
    backends: &[Backend],
    rounds_by_backend: &[Vec<Measurement>],
) -> Vec<Option<FioRatios>> {
    let Some(fio) = backends.iter().position(|&b| b == Backend::Fio) else {
        return vec![None; rounds_by_backend.len()];
    };
    let fio_rounds = &rounds_by_backend[fio];
    rounds_by_backend
        .iter()
        .map(|measurements| {
            let pairs: Vec<(&Measurement, &Measurement)> = measurements
                .iter()
                .zip(fio_rounds)
                .filter(|(_, f)| f.iops > 0.0 && f.lat_us_p50 > 0.0)
                .collect();
            if pairs.is_empty() {
                return None;
            }
            let mut iops: Vec<f64> = pairs.iter().map(|(m, f)| m.iops / f.iops).collect();
            let mut lat: Vec<f64> = pairs
                .iter()
                .map(|(m, f)| m.lat_us_p50 / f.lat_us_p50)
                .collect();
            Some(FioRatios {
                iops: stats::median(&mut iops),
                lat_p50: stats::median(&mut lat),
            })
        })
        .collect()
}

/// The results table (the medians of each backend's rounds); the ratio columns, `ratios[i]`
/// for `results[i]`, when fio ran.
pub fn table(results: &[Measurement], ratios: &[Option<FioRatios>]) -> String {
    let with_fio = ratios.iter().any(Option::is_some);
    let header = [
        "backend",
        "IOPS",
        "x fio",
        "MiB/s",
        "p50 µs",
        "x fio",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "allocs/op",
        "usr s",
        "sys s",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    let ratio = |value: Option<f64>| match value {
        Some(value) if value.is_finite() => format!("{value:.2}"),
        _ => "-".to_string(),
    };
    for (m, ratios) in results.iter().zip(ratios) {
        rows.push(vec![
            m.backend.clone(),
            format_count(m.iops),
            ratio(ratios.map(|r| r.iops)),
            format!("{:.1}", m.bw_bytes_per_s / (1 << 20) as f64),
            format!("{:.1}", m.lat_us_p50),
            ratio(ratios.map(|r| r.lat_p50)),
            format!("{:.1}", m.lat_us_p99),
            format!("{:.1}", m.lat_us_p999),
            format!("{:.1}", m.lat_us_max),
            m.allocs_per_op
                .map(|value| format!("{value:.2}"))
                .unwrap_or_else(|| "-".to_string()),
            format!("{:.2}", m.cpu_usr_s),
            format!("{:.2}", m.cpu_sys_s),
        ]);
    }
    let keep: Vec<bool> = (0..header.len())
        .map(|column| with_fio || header[column] != "x fio")
        .collect();
    crate::table::render(&rows, &keep)
}

/// One row per round: fio's IOPS, then each backend's IOPS and its ratio to that round's fio.
pub fn rounds_table(backends: &[Backend], rounds_by_backend: &[Vec<Measurement>]) -> String {
    let fio = backends.iter().position(|&b| b == Backend::Fio);
    let mut header = vec!["round".to_string()];
    header.extend(backends.iter().map(|b| b.name().to_string()));
    let mut rows = vec![header];
    let rounds = rounds_by_backend.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..rounds {
        let fio_iops = fio
            .and_then(|f| rounds_by_backend[f].get(round))
            .map(|m| m.iops);
        let mut row = vec![(round + 1).to_string()];
        for (index, measurements) in rounds_by_backend.iter().enumerate() {
            row.push(match (measurements.get(round), fio_iops) {
                (Some(m), Some(f)) if Some(index) != fio && f > 0.0 => {
                    format!("{} {:.2}", format_count(m.iops), m.iops / f)
                }
                (Some(m), _) => format_count(m.iops),
                (None, _) => "-".to_string(),
            });
        }
        rows.push(row);
    }
    let keep = vec![true; backends.len() + 1];
    crate::table::render(&rows, &keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A QD32 randwrite measurement of `iops` and p50 `p50` µs (the rest empty).
    fn run(name: &str, iops: f64, p50: f64) -> Measurement {
        let recorder = stats::Recorder::new(std::time::Duration::from_secs(1));
        let totals = stats::PhaseTotals {
            elapsed: std::time::Duration::from_secs(1),
            allocations: 0,
            cpu_user: std::time::Duration::ZERO,
            cpu_system: std::time::Duration::ZERO,
        };
        let label = stats::WorkloadLabel {
            rw: crate::args::Rw::Randwrite,
            bs_bytes: 4096,
            qd: 32,
            dsync: false,
        };
        let mut m = Measurement::from_records(name, label, &recorder, &totals);
        m.iops = iops;
        m.lat_us_p50 = p50;
        m
    }

    #[test]
    fn round_order_runs_each_backend_once_and_changes_neighbours() {
        for count in 1..=9 {
            for round in 0..6 {
                let mut order = round_order(count, round);
                assert_eq!(order.len(), count);
                order.sort_unstable();
                assert_eq!(order, (0..count).collect::<Vec<_>>(), "count {count}");
            }
        }
        // The --compare list on Linux: eight backends, fio last. Over five rounds fio follows
        // four different backends, and the first driver follows fio at most twice.
        let predecessors = |target: usize| -> Vec<Option<usize>> {
            (0..5)
                .map(|round| {
                    let order = round_order(8, round);
                    let at = order.iter().position(|&i| i == target).unwrap();
                    at.checked_sub(1).map(|before| order[before])
                })
                .collect()
        };
        let mut fio_after = predecessors(7);
        fio_after.sort_unstable();
        fio_after.dedup();
        assert!(fio_after.len() >= 4, "{fio_after:?}");
        let uring_after = predecessors(0);
        assert!(
            uring_after.iter().filter(|&&p| p == Some(7)).count() <= 2,
            "{uring_after:?}"
        );
        assert_eq!(round_order(8, 0), (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn rounds_table_shows_each_rounds_fio_and_ratios() {
        let with_iops = |name: &str, iops: f64| run(name, iops, 100.0);
        let table = rounds_table(
            &[Backend::Uring, Backend::Fio],
            &[
                vec![with_iops("uring", 90_000.0), with_iops("uring", 55_000.0)],
                vec![with_iops("fio", 100_000.0), with_iops("fio", 50_000.0)],
            ],
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[1].contains("90,000 0.90") && lines[1].contains("100,000"),
            "{table}"
        );
        assert!(
            lines[2].contains("55,000 1.10") && lines[2].contains("50,000"),
            "{table}"
        );
    }

    #[test]
    fn paired_ratios_pair_each_round_with_its_fio() {
        // The device slows down in round 2: uring is ahead of fio in two rounds of three, which
        // the medians (90k against 100k) would hide.
        let ratios = paired_ratios(
            &[Backend::Uring, Backend::Fio],
            &[
                vec![
                    run("uring", 90_000.0, 300.0),
                    run("uring", 55_000.0, 600.0),
                    run("uring", 120_000.0, 250.0),
                ],
                vec![
                    run("fio", 100_000.0, 300.0),
                    run("fio", 50_000.0, 500.0),
                    run("fio", 100_000.0, 250.0),
                ],
            ],
        );
        let uring = ratios[0].expect("fio ran");
        assert!((uring.iops - 1.1).abs() < 1e-9, "{uring:?}");
        assert!((uring.lat_p50 - 1.0).abs() < 1e-9, "{uring:?}");
        assert_eq!(
            ratios[1],
            Some(FioRatios {
                iops: 1.0,
                lat_p50: 1.0
            })
        );
        let without_fio = paired_ratios(&[Backend::Uring], &[vec![run("uring", 1.0, 1.0)]]);
        assert_eq!(without_fio, vec![None]);
    }

    #[test]
    fn table_shows_ratios_only_with_fio() {
        let uring = run("uring", 950.0, 110.0);
        let without = table(
            std::slice::from_ref(&uring),
            &paired_ratios(&[Backend::Uring], &[vec![uring.clone()]]),
        );
        assert!(!without.contains("x fio"), "{without}");
        let mut fio = uring.clone();
        fio.backend = "fio".into();
        fio.iops = 1000.0;
        fio.lat_us_p50 = 100.0;
        fio.allocs_per_op = None;
        let ratios = paired_ratios(
            &[Backend::Uring, Backend::Fio],
            &[vec![uring.clone()], vec![fio.clone()]],
        );
        let with = table(&[uring, fio], &ratios);
        assert!(with.contains("x fio"), "{with}");
        let uring_row = with.lines().find(|line| line.starts_with("uring")).unwrap();
        assert!(
            uring_row.contains("0.95") && uring_row.contains("1.10"),
            "{uring_row}"
        );
        assert_eq!(with.lines().count(), 3);
    }
}
