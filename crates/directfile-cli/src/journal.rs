//! `directfile journal {bench, dump, verify}`: flags in, `directfile_journal::tools` called, its
//! reports printed. The journal logic (the journals, the baselines, the scan) lives in
//! `directfile_journal::tools`.

use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use directfile_journal::tools::{self, BenchConfig, BenchJournal, BenchResult};

use crate::alloc_count;
use crate::args::{JournalBenchArgs, JournalDirArgs, Rw};
use crate::bench::stats::Measurement;
use crate::bench::workload::{self, Workload};
use crate::error::{cli_error, CliResult};
use crate::fio;
use crate::plot;
use crate::progress::Progress;
use crate::sys;
use crate::tempfile::BenchDir;
use crate::units::format_count;

/// Exit status of `journal verify` when the directory could not be checked at all (0, 1 and 2
/// are the verdicts).
pub const VERIFY_FAILED: u8 = 3;

/// `journal bench`.
pub fn bench(args: JournalBenchArgs) -> CliResult<ExitCode> {
    let record_bytes = usize::try_from(args.record_bytes)
        .ok()
        .filter(|bytes| *bytes <= 1 << 30)
        .ok_or_else(|| cli_error!("--record-bytes {} is larger than 1 GiB", args.record_bytes))?;
    if let Some(path) = &args.plot {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent.filter(|p| !p.is_dir()) {
            return Err(cli_error!(
                "--plot {}: directory {} does not exist",
                path.display(),
                parent.display()
            ));
        }
    }
    // Before any thread starts (see BenchDir::create).
    let scratch = BenchDir::create(args.dir.as_deref())?;

    let mut config = BenchConfig::new(scratch.path());
    config.writers = args.writers as usize;
    config.record_bytes = record_bytes;
    config.runtime = args.runtime;
    config.compare = args.compare;
    config.allocs = Some(alloc_count::allocation_count);

    let systems = if args.compare { 3 } else { 1 };
    let progress = Progress::start(
        format!("journal bench, {systems} system(s)"),
        args.runtime * systems,
    );
    let results = tools::bench(&config).map_err(|err| cli_error!("journal bench: {err}"))?;
    progress.finish();
    if let Some(path) = &args.plot {
        let series: Vec<plot::CdfSeries<'_>> = results
            .iter()
            .map(|r| plot::CdfSeries {
                name: r.journal.name(),
                cdf: &r.commit_latency_cdf,
                p50_us: r.commit_us_p50,
            })
            .collect();
        let title = format!(
            "Commit latency (CDF), {} writers x {} B records",
            args.writers, record_bytes
        );
        let svg = plot::render_cdf(&title, "appends durable within latency", &series);
        std::fs::write(path, svg)
            .map_err(|err| cli_error!("cannot write {}: {err}", path.display()))?;
        if !args.json {
            println!("plot written to {}", path.display());
        }
    }

    if args.json {
        for result in &results {
            println!("{}", result.to_json());
        }
        return Ok(ExitCode::SUCCESS);
    }

    // fio's 4 KiB O_DSYNC write at QD1: the floor a lone writer's commit is held against.
    let fio_reference = if !args.compare {
        None
    } else if fio::is_installed() {
        let progress = Progress::start("fio 4 KiB O_DSYNC write QD1".to_string(), args.runtime);
        let measured = fio_dsync_qd1(scratch.path(), args.runtime)?;
        progress.finish();
        Some(measured)
    } else {
        eprintln!("directfile: fio is not installed: no fio reference (apt-get install fio)");
        None
    };

    println!(
        "journal bench: {} writers x {} B records, {:.1} s per journal, in {} ({})",
        args.writers,
        record_bytes,
        args.runtime.as_secs_f64(),
        args.dir.as_deref().unwrap_or(Path::new(".")).display(),
        file_system_name(scratch.path())
    );
    print!("{}", table(&results));
    if let Some(fio) = &fio_reference {
        println!(
            "fio 4 KiB O_DSYNC write QD1 (psync): {} IOPS, p50 {:.1} µs, p99 {:.1} µs",
            format_count(fio.iops),
            fio.lat_us_p50,
            fio.lat_us_p99
        );
        if let Some(ours) = results
            .iter()
            .find(|r| r.journal == BenchJournal::Directfile)
        {
            println!(
                "directfile commit p50 / fio p50 = {:.1} / {:.1} = {:.2}{}",
                ours.commit_us_p50,
                fio.lat_us_p50,
                ours.commit_us_p50 / fio.lat_us_p50,
                if args.writers == 1 {
                    " (target <= 1.2 with 1 writer)"
                } else {
                    ""
                }
            );
        }
    }
    drop(scratch);
    Ok(ExitCode::SUCCESS)
}

/// fio writing 4 KiB blocks sequentially with O_DIRECT | O_DSYNC at QD1 on a file in `dir`
/// laid out with data first (as `directfile bench` does: writes into unwritten extents would
/// add extent conversion to every write; the journal's segments are zero-filled too).
fn fio_dsync_qd1(dir: &Path, runtime: Duration) -> CliResult<Measurement> {
    let workload = Workload {
        rw: Rw::Write,
        bs: 4096,
        qd: 1,
        size: 64 << 20,
        runtime,
        dsync: true,
        memory_align: 4096,
        executor: crate::args::ExecutorArg::Own,
        tuning: Default::default(),
    };
    let path = dir.join("fio-4k-dsync-qd1.dat");
    fs::File::create(&path)
        .and_then(|_| workload::lay_out(&path, &workload, |_| {}))
        .map_err(|err| cli_error!("cannot lay out {} for fio: {err}", path.display()))?;
    fio::run(&path, &workload)
}

#[cfg(unix)]
fn file_system_name(path: &Path) -> String {
    match sys::file_system_magic(path) {
        Ok(magic) => sys::file_system_name(magic)
            .map(str::to_string)
            .unwrap_or_else(|| format!("file system {magic:#x}")),
        Err(_) => "unknown file system".to_string(),
    }
}

#[cfg(windows)]
fn file_system_name(path: &Path) -> String {
    sys::file_system_name_of(path).unwrap_or_else(|_| "unknown file system".to_string())
}

/// Whether `journal` is one of the `std::fs` baselines the targets are measured against.
fn is_baseline(journal: BenchJournal) -> bool {
    matches!(
        journal,
        BenchJournal::Naive | BenchJournal::BufferedGroupCommit
    )
}

/// One row per journal; with baselines among the results, each row's appends/s and commit p50
/// as a ratio to the best baseline (the one with the most appends/s).
pub fn table(results: &[BenchResult]) -> String {
    let best = results
        .iter()
        .filter(|r| is_baseline(r.journal))
        .max_by(|a, b| a.appends_per_s.total_cmp(&b.appends_per_s));
    let header = [
        "journal",
        "appends/s",
        "x best baseline",
        "MiB/s",
        "p50 µs",
        "x best baseline",
        "p99 µs",
        "p99.9 µs",
        "batches",
        "records/batch",
        "allocs/append",
    ];
    let ratio = |value: f64, reference: Option<f64>| match reference {
        Some(reference) if reference > 0.0 && value.is_finite() => {
            format!("{:.2}", value / reference)
        }
        _ => "-".to_string(),
    };
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in results {
        rows.push(vec![
            r.journal.name().to_string(),
            format_count(r.appends_per_s),
            ratio(r.appends_per_s, best.map(|b| b.appends_per_s)),
            format!("{:.1}", r.bytes_per_s / f64::from(1 << 20)),
            format!("{:.0}", r.commit_us_p50),
            ratio(r.commit_us_p50, best.map(|b| b.commit_us_p50)),
            format!("{:.0}", r.commit_us_p99),
            format!("{:.0}", r.commit_us_p999),
            r.batches.to_string(),
            format!("{:.1}", r.records_per_batch_mean),
            r.allocs_per_append
                .map(|value| format!("{value:.4}"))
                .unwrap_or_else(|| "-".to_string()),
        ]);
    }
    let keep: Vec<bool> = header
        .iter()
        .map(|name| best.is_some() || *name != "x best baseline")
        .collect();
    crate::table::render(&rows, &keep)
}

/// Refuses what is not a journal directory before the tools read it.
fn check_journal_dir(dir: &Path) -> CliResult<()> {
    if !dir.exists() {
        return Err(cli_error!("{} does not exist", dir.display()));
    }
    if !dir.is_dir() {
        return Err(cli_error!(
            "{} is not a directory (pass the journal's directory)",
            dir.display()
        ));
    }
    Ok(())
}

fn no_segments(dir: &Path) -> crate::error::CliError {
    cli_error!(
        "{} is not a journal directory: it holds no segment files (<20 digits>.seg)",
        dir.display()
    )
}

/// `journal dump`.
pub fn dump(args: JournalDirArgs) -> CliResult<ExitCode> {
    check_journal_dir(&args.dir)?;
    let report = tools::dump(&args.dir)
        .map_err(|err| cli_error!("cannot read the journal in {}: {err}", args.dir.display()))?;
    if report.segments.is_empty() {
        return Err(no_segments(&args.dir));
    }
    print!("{report}");
    // A raft log (directfile-raft) says what its records are.
    match directfile_raft::inspect::inspect(&args.dir) {
        Ok(Some(raft)) => print!("{raft}"),
        Ok(None) => {}
        Err(err) => println!("raft view unavailable: {err}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `journal verify`: the report, and its verdict as the exit status.
pub fn verify(args: JournalDirArgs) -> CliResult<ExitCode> {
    check_journal_dir(&args.dir)?;
    let report = tools::verify(&args.dir)
        .map_err(|err| cli_error!("cannot read the journal in {}: {err}", args.dir.display()))?;
    if report.scans.is_empty() {
        return Err(no_segments(&args.dir));
    }
    print!("{report}");
    let mut code = u8::try_from(report.exit_code()).unwrap_or(VERIFY_FAILED);
    // A raft log (directfile-raft): its meta, its entries' range, and whether every entry
    // decodes at the LSN its index maps to (a mismatch is corruption: exit 2).
    if code < 2 {
        match directfile_raft::inspect::inspect(&args.dir) {
            Ok(Some(raft)) => {
                print!("{}", raft.summary());
                for problem in &raft.problems {
                    println!("  PROBLEM: {problem}");
                }
                if !raft.problems.is_empty() {
                    code = 2;
                }
            }
            Ok(None) => {}
            Err(err) => {
                println!("raft view: {err}");
                code = 2;
            }
        }
    }
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(journal: BenchJournal, appends_per_s: f64, p50: f64) -> BenchResult {
        BenchResult {
            journal,
            writers: 64,
            record_bytes: 256,
            appends: appends_per_s as u64,
            appends_per_s,
            bytes_per_s: appends_per_s * 256.0,
            commit_us_p50: p50,
            commit_us_p99: p50 * 2.0,
            commit_us_p999: p50 * 3.0,
            batches: 10,
            records_per_batch_mean: appends_per_s / 10.0,
            allocs_per_append: Some(0.0),
            commit_latency_cdf: vec![(p50, 0.5), (p50 * 3.0, 1.0)],
        }
    }

    #[test]
    fn journal_plot_has_a_curve_and_a_legend_per_journal() {
        let results = [
            result(BenchJournal::Directfile, 50_000.0, 300.0),
            result(BenchJournal::Naive, 900.0, 2_000.0),
        ];
        let series: Vec<plot::CdfSeries<'_>> = results
            .iter()
            .map(|r| plot::CdfSeries {
                name: r.journal.name(),
                cdf: &r.commit_latency_cdf,
                p50_us: r.commit_us_p50,
            })
            .collect();
        let svg = plot::render_cdf("Commit latency", "appends durable within latency", &series);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("directfile") && svg.contains("naive"));
        assert!(svg.contains("appends durable within latency"));
    }

    #[test]
    fn table_ratios_are_to_the_best_baseline() {
        let alone = table(&[result(BenchJournal::Directfile, 50_000.0, 900.0)]);
        assert!(!alone.contains("x best baseline"), "{alone}");
        assert_eq!(alone.lines().count(), 2);

        let with = table(&[
            result(BenchJournal::Directfile, 50_000.0, 900.0),
            result(BenchJournal::Naive, 1_000.0, 20_000.0),
            result(BenchJournal::BufferedGroupCommit, 20_000.0, 3_000.0),
        ]);
        assert!(with.contains("x best baseline"), "{with}");
        let row = |name: &str| {
            with.lines()
                .find(|line| line.starts_with(name))
                .unwrap()
                .to_string()
        };
        // 50k / 20k = 2.50 appends/s, 900 / 3000 = 0.30 p50.
        assert!(
            row("directfile").contains("2.50") && row("directfile").contains("0.30"),
            "{with}"
        );
        assert!(row("buffered-group-commit").contains("1.00"), "{with}");
        assert!(row("naive").contains("0.05"), "{with}");
        assert_eq!(with.lines().count(), 4);
    }
}
