//! `directfile`: benchmark and probe tool for the directfile library, and the journal's tools.
//!
//! The CLI holds no library logic: it parses flags, runs the bench harness (workload loop,
//! statistics, plot, table) against the library and the baselines users would otherwise reach
//! for, and prints. The only `unsafe` lives in `sys` (libc calls; Win32 calls in
//! `sys_windows.rs`) and `alloc_count` (the counting global allocator). On Windows `sys`,
//! `device` and `probe` are their `*_windows.rs` forms, with the same names.
#![deny(unsafe_code)]

mod alloc_count;
mod args;
mod bench;
#[cfg_attr(windows, path = "device_windows.rs")]
mod device;
mod error;
mod fio;
mod journal;
mod plot;
#[cfg_attr(windows, path = "probe_windows.rs")]
mod probe;
mod progress;
#[cfg_attr(windows, path = "sys_windows.rs")]
mod sys;
mod table;
mod tempfile;
mod units;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, JournalCommand};

#[global_allocator]
static GLOBAL: alloc_count::CountingAllocator = alloc_count::CountingAllocator;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return args::report_parse_error(err),
    };
    // The benches measure in a session of their own, as fio runs its jobs (`sys::run_in_own_session`).
    if matches!(
        cli.command,
        Command::Bench(_) | Command::Journal(JournalCommand::Bench(_))
    ) {
        match sys::run_in_own_session() {
            Ok(Some(status)) => return ExitCode::from(status),
            Ok(None) => {}
            Err(err) => eprintln!(
                "directfile: cannot start a session for the bench ({err}): measuring in this one"
            ),
        }
    }
    // `journal verify` exits 1 and 2 for its verdicts; its own failures get a status of their own.
    let mut failure = ExitCode::from(1);
    let outcome = match cli.command {
        Command::Bench(bench_args) => bench::run(bench_args).map(|()| ExitCode::SUCCESS),
        Command::Probe(probe_args) => probe::run(probe_args).map(|()| ExitCode::SUCCESS),
        Command::Journal(JournalCommand::Bench(args)) => journal::bench(args),
        Command::Journal(JournalCommand::Dump(args)) => journal::dump(args),
        Command::Journal(JournalCommand::Verify(args)) => {
            failure = ExitCode::from(journal::VERIFY_FAILED);
            journal::verify(args)
        }
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("directfile: error: {err}");
            failure
        }
    }
}
