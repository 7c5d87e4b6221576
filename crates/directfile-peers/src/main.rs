//! `directfile-peers`: directfile side by side with its peers on the same workload.
//!
//! * `file`: 4 KiB random O_DIRECT (optionally O_DSYNC) writes at a queue depth, on
//!   directfile (uring and threads), tokio-uring, glommio and compio.
//! * `journal`: concurrent writers appending small records durably, on directfile-journal,
//!   okaywal, fsys's journal, raft-engine and RocksDB's WAL.
//! * `raft`: three in-process openraft nodes under concurrent `client_write`s, on
//!   directfile-raft, a RocksDB log store and a memory log store (the ceiling).
//!
//! This crate is a workspace member but not a default member: it stays out of the default
//! build and test run. It has no tests. See README.md for the command and measured tables.

mod file;
mod journal;
mod raft;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "directfile-peers",
    about = "directfile side by side with tokio-uring, glommio, compio (file), okaywal, fsys, raft-engine, RocksDB (journal) and openraft log stores (raft)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Random O_DIRECT writes of --bs bytes at --qd in flight, on every system, in rounds.
    File {
        /// In-flight writes (concurrent tasks, each looping write -> await).
        #[arg(long, default_value_t = 32)]
        qd: usize,
        /// Open with O_DSYNC as well (write-through).
        #[arg(long)]
        dsync: bool,
        /// Measured time per system per round (e.g. 5s, 500ms).
        #[arg(long, default_value = "5s", value_parser = util::parse_duration)]
        runtime: Duration,
        /// File size (e.g. 256m, 1g); the file is written with data before measuring.
        #[arg(long, default_value = "256m", value_parser = util::parse_size)]
        size: u64,
        /// Block size in bytes.
        #[arg(long, default_value = "4k", value_parser = util::parse_size)]
        bs: u64,
        /// Rounds; systems alternate within each round, the table shows medians.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Only these systems (comma separated): directfile-uring, directfile-threads,
        /// tokio-uring, glommio, compio.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// One JSON object per system per line (medians), instead of the table.
        #[arg(long)]
        json: bool,
        /// A file, or a directory to make a scratch file in (removed afterwards).
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Writers appending records, each append awaited until durable, on every journal.
    Journal {
        #[arg(long, default_value_t = 64)]
        writers: usize,
        #[arg(long, default_value_t = 256)]
        record_bytes: usize,
        #[arg(long, default_value = "5s", value_parser = util::parse_duration)]
        runtime: Duration,
        /// Rounds; journals alternate within each round, the table shows medians.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Only these journals (comma separated): directfile, okaywal, fsys, fsys-direct,
        /// raft-engine, rocksdb, fio (fio's 4 KiB O_DSYNC QD1 write; by default with
        /// --writers 1 only).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// One JSON object per journal per line, instead of the table.
        #[arg(long)]
        json: bool,
        /// Directory to work in (each journal gets a fresh subdirectory, removed afterwards).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Three in-process openraft nodes, concurrent client writes, on each Raft log store.
    Raft(RaftArgs),
}

#[derive(clap::Args, Debug)]
struct RaftArgs {
    /// Concurrent client_write calls to the leader.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Bytes of each written value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    #[arg(long, default_value = "5s", value_parser = util::parse_duration)]
    runtime: Duration,
    /// Rounds; stores alternate within each round, the table shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only these stores (comma separated): directfile-raft, rocksdb, memory.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Directory to work in (each cluster gets a fresh subdirectory, removed afterwards).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    util::raise_memlock_limit();
    let outcome = match cli.command {
        Command::File {
            qd,
            dsync,
            runtime,
            size,
            bs,
            rounds,
            only,
            json,
            path,
        } => file::main(file::Config {
            qd: qd.max(1),
            dsync,
            runtime,
            size,
            bs: bs as usize,
            rounds: rounds.max(1),
            only,
            json,
            path,
        }),
        Command::Journal {
            writers,
            record_bytes,
            runtime,
            rounds,
            only,
            json,
            dir,
        } => journal::main(journal::Config {
            writers: writers.max(1),
            record_bytes: record_bytes.max(1),
            runtime,
            rounds: rounds.max(1),
            only,
            json,
            dir,
        }),
        Command::Raft(args) => raft::main(raft::Config {
            writers: args.writers.max(1),
            value_bytes: args.value_bytes,
            runtime: args.runtime,
            rounds: args.rounds.max(1),
            only: args.only,
            dir: args.dir,
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("directfile-peers: {message}");
            ExitCode::FAILURE
        }
    }
}
