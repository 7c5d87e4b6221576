//! `directfile`: benchmark and probe tool for the directfile library.
//!
//! The CLI holds no library logic: it parses flags, runs the bench harness (workload loop,
//! statistics, plot, table) against the library and the baselines users would otherwise reach
//! for, and prints. The only `unsafe` lives in `sys` (libc calls) and `alloc_count` (the counting
//! global allocator).
#![deny(unsafe_code)]

mod alloc_count;
mod args;
mod bench;
mod device;
mod error;
mod fio;
mod plot;
mod probe;
mod progress;
mod sys;
mod tempfile;
mod units;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

#[global_allocator]
static GLOBAL: alloc_count::CountingAllocator = alloc_count::CountingAllocator;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return args::report_parse_error(err),
    };
    let outcome = match cli.command {
        Command::Bench(bench_args) => bench::run(bench_args),
        Command::Probe(probe_args) => probe::run(probe_args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("directfile: error: {err}");
            ExitCode::from(1)
        }
    }
}
