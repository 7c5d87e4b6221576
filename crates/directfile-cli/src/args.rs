//! Command-line flags (clap derive) and the one-line report of a parse error.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::units::{parse_duration, parse_nonzero_size, parse_spin};

#[derive(Debug, Parser)]
#[command(
    name = "directfile",
    version,
    about = "Benchmark and probe unbuffered (O_DIRECT), write-through (O_DSYNC) file I/O",
    after_help = "Examples:
  directfile bench --compare              # directfile vs std, tokio and fio, here
  directfile probe /data                  # what /data's file system and this kernel offer
  directfile journal bench --compare      # the group-commit journal vs std::fs baselines
  directfile journal verify /data/wal     # exit 0 healthy, 1 torn tail, 2 corrupt

Temporary files go in the directory given (or the current one) and are removed afterwards,
also on Ctrl-C. They must be on a disk file system (ext4, xfs, btrfs): tmpfs has no O_DIRECT."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure IOPS, bandwidth and latency of one workload (fio-like flags).
    #[command(after_help = "Examples:
  directfile bench --compare --qd 32                 # every backend and fio, 5 rounds, medians
  directfile bench /data --qd 1 --dsync --json       # one backend, QD1 write-through, JSON
  directfile bench --backend threads --plot lat.svg  # the thread pool, with a latency plot

Without PATH (or with a directory) the bench makes a temporary file in the current directory
(or that directory), laid out with data, and removes it afterwards, also on Ctrl-C. tmpfs is
refused: it has no O_DIRECT.")]
    Bench(BenchArgs),
    /// Report what this machine and file system offer for direct I/O.
    #[command(after_help = "Examples:
  directfile probe             # the current directory's file system
  directfile probe /data --json

A directory is probed with a temporary file in it, removed afterwards.")]
    Probe(ProbeArgs),
    /// The group-commit journal: measure it, list a journal directory, check one.
    #[command(subcommand)]
    Journal(JournalCommand),
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Measure appends/s and commit latency of the journal (and, with --compare, of the
    /// std::fs baselines) with many concurrent writers.
    #[command(after_help = "Examples:
  directfile journal bench --compare                  # 64 writers x 256 B, vs baselines
  directfile journal bench /data --writers 1 --json   # a lone writer's commit latency

The journals are made in a temporary directory inside DIR (or the current directory) and
removed afterwards, also on Ctrl-C.")]
    Bench(JournalBenchArgs),
    /// List a journal directory: segments, batches, records and their LSNs.
    #[command(after_help = "Example:
  directfile journal dump /data/wal")]
    Dump(JournalDirArgs),
    /// Check a journal directory as recovery would. Exit status: 0 healthy, 1 torn tail found
    /// (recovery truncates it), 2 corruption, 3 the directory could not be checked.
    #[command(after_help = "Example:
  directfile journal verify /data/wal && echo healthy

Read-only: it neither locks nor changes the journal.")]
    Verify(JournalDirArgs),
}

#[derive(Debug, Clone, Args)]
pub struct JournalBenchArgs {
    /// Directory to run in (on a disk file system; never tmpfs). The bench works in a temporary
    /// directory inside it, removed afterwards (also on Ctrl-C); without DIR, in the current
    /// directory.
    pub dir: Option<PathBuf>,

    /// Concurrent appenders, each waiting for its record to be durable before the next.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub writers: u32,

    /// Payload bytes of each record (k, m suffixes are binary).
    #[arg(long, value_name = "BYTES", default_value = "256", value_parser = parse_nonzero_size)]
    pub record_bytes: u64,

    /// How long each journal is measured (5s, 500ms, 1m).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub runtime: Duration,

    /// Also measure, in the same run and directory, a naive journal (std::fs append +
    /// fdatasync per record under a mutex) and a buffered group commit (std::fs + one
    /// fdatasync per batch); in the table, fio's 4 KiB O_DSYNC write at QD1 when installed.
    #[arg(long)]
    pub compare: bool,

    /// Print one JSON object per journal (one line each) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Write an SVG with the commit latency CDF of each journal.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct JournalDirArgs {
    /// The journal directory (holding its NNN.seg segment files).
    pub dir: PathBuf,
}

/// The I/O pattern, named as fio names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Rw {
    Randwrite,
    Write,
    Randread,
    Read,
}

impl Rw {
    pub fn is_write(self) -> bool {
        matches!(self, Rw::Randwrite | Rw::Write)
    }

    pub fn is_random(self) -> bool {
        matches!(self, Rw::Randwrite | Rw::Randread)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rw::Randwrite => "randwrite",
            Rw::Write => "write",
            Rw::Randread => "randread",
            Rw::Read => "read",
        }
    }
}

impl fmt::Display for Rw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which implementation performs the I/O. Each system lists its own directfile drivers; the
/// other system's is accepted but hidden, and refused by the library with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// directfile with the backend it picks by itself (io_uring on Linux, the completion port
    /// on Windows, else threads).
    Auto,
    /// directfile on its io_uring driver (Linux).
    #[cfg_attr(not(target_os = "linux"), value(hide = true))]
    Uring,
    /// directfile on its I/O completion port driver (Windows).
    #[cfg_attr(not(windows), value(hide = true))]
    Iocp,
    /// directfile on its thread-pool driver.
    Threads,
    /// std::fs::File::write_at/read_at, one OS thread per in-flight op.
    Std,
    /// tokio spawn_blocking + pwrite/pread (tokio::fs cannot do O_DIRECT).
    Tokio,
}

/// What drives directfile's futures in `bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorArg {
    /// `Driver::block_on`.
    Own,
    /// `futures::executor::block_on`.
    Futures,
    /// A tokio multi-thread runtime (one worker per core), one task per operation in flight;
    /// completions reaped by tokio's reactor on io_uring (by the driver's threads elsewhere).
    Tokio,
    /// `smol::block_on` on one thread; completions reaped by async-io's reactor on io_uring
    /// (by the driver's threads elsewhere).
    Smol,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// File or directory to run on. A directory gets a temporary file that is removed afterwards;
    /// without PATH, a temporary file in the current directory. Never tmpfs.
    pub path: Option<PathBuf>,

    /// I/O pattern.
    #[arg(long, value_enum, default_value_t = Rw::Randwrite)]
    pub rw: Rw,

    /// Block size of each operation (k, m, g suffixes are binary).
    #[arg(long, value_name = "BYTES", default_value = "4k", value_parser = parse_nonzero_size)]
    pub bs: u64,

    /// Operations in flight at once.
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub qd: u32,

    /// File size the offsets range over.
    #[arg(long, value_name = "BYTES", default_value = "256m", value_parser = parse_nonzero_size)]
    pub size: u64,

    /// How long each measurement runs (5s, 500ms, 1m).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub runtime: Duration,

    /// Write-through: open with O_DSYNC so each write is durable when it completes.
    #[arg(long)]
    pub dsync: bool,

    /// Implementation to measure (ignored with --compare, which runs them all).
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,

    /// What drives directfile's futures: `own` is `Driver::block_on`, which waits in the ring
    /// on io_uring (with cooperative completions on, as they suit it); `futures` is
    /// `futures::executor::block_on`, a generic executor that parks in a futex while the
    /// driver's reaper thread waits for completions (the driver's defaults); `tokio` and
    /// `smol` run them on those runtimes, whose reactors reap the completions on io_uring (on
    /// Windows and the thread pool the driver's own threads wake them, as for `futures`).
    #[arg(long, value_enum, default_value_t = ExecutorArg::Own)]
    pub executor: ExecutorArg,

    /// How long a directfile future that is alone in flight spins for its completion before
    /// it sleeps (`DriverBuilder::spin`; 0 turns spinning off, on the thread pool's workers
    /// too). Spinning trades CPU for latency at queue depth 1: measure both ways on your machine
    /// (docs/BENCHMARKS.md). Default: the driver's, 250us
    #[arg(long, value_name = "DURATION", value_parser = parse_spin)]
    pub spin: Option<Duration>,

    /// io_uring: keep an operation that is alone in flight on the ring. By default, under
    /// `Driver::block_on`, the driver runs it as one blocking call on the calling thread when
    /// that has been faster lately (`DriverBuilder::inline_at_qd1`)
    #[arg(long)]
    pub ring_only: bool,

    /// Run directfile (both drivers), std, tokio and fio (when installed) on the same file,
    /// alternating them (each round in a different order), and print one table of medians
    /// with ratios to fio (each the median of the per-round ratios to that round's fio).
    #[arg(long)]
    pub compare: bool,

    /// Rounds for --compare (each prints its fio IOPS, so a ratio's device phase shows; the
    /// disk's rate moves by a third between its slow and fast phases, so use at least 5).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

    /// Print one JSON object per result (one line each) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Write an SVG with the latency CDF per backend and IOPS over time.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// File or directory to probe (default: the current directory).
    pub path: Option<PathBuf>,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Prints help and version as clap does; any other parse error as one line, exit status 2.
pub fn report_parse_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            // The first paragraph, joined: "the following required arguments were not
            // provided:" is followed by the indented list of what is missing.
            let rendered = err.render().to_string();
            let paragraph: Vec<&str> = rendered
                .lines()
                .skip_while(|line| line.trim().is_empty())
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            let joined = if paragraph.is_empty() {
                "invalid arguments".to_string()
            } else {
                paragraph.join(" ")
            };
            let message = joined.strip_prefix("error: ").unwrap_or(&joined);
            eprintln!("directfile: error: {message} (see 'directfile --help')");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("directfile").chain(args.iter().copied()))
    }

    #[test]
    fn bench_defaults_match_the_issue() {
        let cli = parse(&["bench"]).unwrap();
        let Command::Bench(bench) = cli.command else {
            panic!("expected bench")
        };
        assert_eq!(bench.rw, Rw::Randwrite);
        assert_eq!(bench.bs, 4096);
        assert_eq!(bench.qd, 32);
        assert_eq!(bench.size, 256 << 20);
        assert_eq!(bench.runtime, Duration::from_secs(5));
        assert!(!bench.dsync && !bench.compare && !bench.json);
        assert_eq!(bench.rounds, 5);
    }

    #[test]
    fn bench_flags() {
        let cli = parse(&[
            "bench",
            "/x",
            "--rw",
            "read",
            "--bs",
            "64k",
            "--qd",
            "1",
            "--size",
            "1g",
            "--runtime",
            "500ms",
            "--dsync",
            "--backend",
            "tokio",
            "--json",
        ])
        .unwrap();
        let Command::Bench(bench) = cli.command else {
            panic!("expected bench")
        };
        assert_eq!(bench.path, Some(PathBuf::from("/x")));
        assert_eq!(bench.rw, Rw::Read);
        assert_eq!(bench.bs, 65536);
        assert_eq!(bench.qd, 1);
        assert_eq!(bench.backend, BackendArg::Tokio);
        assert!(bench.dsync && bench.json);
    }

    #[test]
    fn journal_bench_defaults_match_the_issue() {
        let cli = parse(&["journal", "bench"]).unwrap();
        let Command::Journal(JournalCommand::Bench(bench)) = cli.command else {
            panic!("expected journal bench")
        };
        assert_eq!(bench.dir, None);
        assert_eq!(bench.writers, 64);
        assert_eq!(bench.record_bytes, 256);
        assert_eq!(bench.runtime, Duration::from_secs(5));
        assert!(!bench.compare && !bench.json);

        let cli = parse(&[
            "journal",
            "bench",
            "/x",
            "--writers",
            "1",
            "--record-bytes",
            "1k",
            "--runtime",
            "1s",
            "--compare",
            "--json",
        ])
        .unwrap();
        let Command::Journal(JournalCommand::Bench(bench)) = cli.command else {
            panic!("expected journal bench")
        };
        assert_eq!(bench.dir, Some(PathBuf::from("/x")));
        assert_eq!((bench.writers, bench.record_bytes), (1, 1024));
        assert!(bench.compare && bench.json);
    }

    #[test]
    fn journal_dump_and_verify_need_a_directory() {
        assert!(parse(&["journal", "dump"]).is_err());
        assert!(parse(&["journal", "verify"]).is_err());
        let cli = parse(&["journal", "verify", "/j"]).unwrap();
        let Command::Journal(JournalCommand::Verify(verify)) = cli.command else {
            panic!("expected journal verify")
        };
        assert_eq!(verify.dir, PathBuf::from("/j"));
        assert!(parse(&["journal", "bench", "--writers", "0"]).is_err());
        assert!(parse(&["journal", "bench", "--record-bytes", "0"]).is_err());
        assert!(parse(&["journal", "bench", "--runtime", "soon"]).is_err());
        let cli = parse(&["journal", "bench", "--plot", "x.svg"]).unwrap();
        let Command::Journal(JournalCommand::Bench(bench)) = cli.command else {
            panic!("expected journal bench")
        };
        assert_eq!(bench.plot, Some(PathBuf::from("x.svg")));
    }

    #[test]
    fn bad_values_fail() {
        assert!(parse(&["bench", "--bs", "4q"]).is_err());
        assert!(parse(&["bench", "--qd", "0"]).is_err());
        assert!(parse(&["bench", "--frobnicate"]).is_err());
        assert!(parse(&["bench", "--rw", "trim"]).is_err());
    }
}
