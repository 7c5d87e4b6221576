//! `journal`: `writers` concurrent writers, each appending `record_bytes`-byte records and
//! waiting for every append to be durable before the next, on directfile-journal, okaywal,
//! fsys's journal, and the two Raft log engines of issue 13: raft-engine (TiKV's) and
//! RocksDB's WAL.
//!
//! directfile-journal is measured by its own `tools::bench` (its writers are tasks on one
//! local executor per core, awaiting `Journal::append`). okaywal and fsys have blocking APIs,
//! so their writers are OS threads, one per writer, as those crates are meant to be used:
//! okaywal `begin_entry` + `write_chunk` + `commit` (commit returns once the entry is on
//! disk; okaywal syncs concurrent commits together), fsys `append` + `sync_through(lsn)`
//! (its leader/follower group commit). raft-engine: one `LogBatch` per append, `put` of the
//! record under the next index in one region, `Engine::write(batch, sync = true)` (its write
//! leader groups concurrent writers into one fdatasync); `put` rather than `add_entries`
//! because `add_entries` takes protobuf messages, and both go through the same log file and
//! group commit. RocksDB: `put_opt` of the record under the next index with
//! `WriteOptions::set_sync(true)` (the WAL is fsynced before the put returns; concurrent
//! writers share a write group), default options otherwise. Commit latency is from the start
//! of the append to its durability, in microseconds.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use directfile_journal::tools::{self, BenchConfig, BenchResult};
use hdrhistogram::Histogram;

use crate::util::{json_number, median};

pub struct Config {
    pub writers: usize,
    pub record_bytes: usize,
    pub runtime: Duration,
    pub rounds: usize,
    pub only: Vec<String>,
    pub json: bool,
    pub dir: PathBuf,
}

const JOURNALS: [&str; 7] = [
    "directfile",
    "okaywal",
    "fsys",
    "fsys-direct",
    "raft-engine",
    "rocksdb",
    "fio",
];

/// One journal's numbers, with the JSON field names of `directfile journal bench`.
#[derive(Clone, Debug)]
struct Row {
    journal: String,
    writers: usize,
    record_bytes: usize,
    appends: u64,
    appends_per_s: f64,
    bytes_per_s: f64,
    commit_us_p50: f64,
    commit_us_p99: f64,
    commit_us_p999: f64,
    /// Durable writes, when the journal tells (None for okaywal and fsys).
    batches: Option<u64>,
    allocs_per_append: Option<f64>,
}

impl Row {
    fn from_directfile(result: &BenchResult) -> Row {
        Row {
            journal: result.journal.name().to_string(),
            writers: result.writers,
            record_bytes: result.record_bytes,
            appends: result.appends,
            appends_per_s: result.appends_per_s,
            bytes_per_s: result.bytes_per_s,
            commit_us_p50: result.commit_us_p50,
            commit_us_p99: result.commit_us_p99,
            commit_us_p999: result.commit_us_p999,
            batches: Some(result.batches),
            allocs_per_append: result.allocs_per_append,
        }
    }

    fn to_json(&self) -> String {
        let (batches, per_batch) = match self.batches {
            Some(b) if b > 0 => (
                b.to_string(),
                format!("{:.2}", self.appends as f64 / b as f64),
            ),
            Some(b) => (b.to_string(), "0.00".to_string()),
            None => ("null".to_string(), "null".to_string()),
        };
        let allocs = self
            .allocs_per_append
            .map_or("null".to_string(), |a| format!("{a:.6}"));
        format!(
            concat!(
                "{{\"journal\":\"{}\",\"writers\":{},\"record_bytes\":{},\"appends\":{},",
                "\"appends_per_s\":{},\"bytes_per_s\":{},\"commit_us_p50\":{},",
                "\"commit_us_p99\":{},\"commit_us_p999\":{},\"batches\":{},",
                "\"records_per_batch_mean\":{},\"allocs_per_append\":{}}}"
            ),
            self.journal,
            self.writers,
            self.record_bytes,
            self.appends,
            json_number(self.appends_per_s, 1),
            json_number(self.bytes_per_s, 1),
            json_number(self.commit_us_p50, 1),
            json_number(self.commit_us_p99, 1),
            json_number(self.commit_us_p999, 1),
            batches,
            per_batch,
            allocs
        )
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// A fresh directory under `parent`, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(parent: &Path, name: &str) -> Result<Scratch, String> {
        let path = parent.join(format!("directfile-peers-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(|e| format!("{name}: mkdir {}: {e}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `append` in a loop on `writers` threads for `runtime`, each call timed as one durable
/// append; the clock covers the whole run between two barriers.
fn measure_threads<F>(config: &Config, name: &str, append: F) -> Result<Row, String>
where
    F: Fn(&[u8]) -> Result<(), String> + Send + Sync,
{
    let start = Barrier::new(config.writers + 1);
    let end = Barrier::new(config.writers + 1);
    let deadline: Mutex<Option<Instant>> = Mutex::new(None);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let record = vec![0x5Au8; config.record_bytes];
    let (appends, histogram, elapsed) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..config.writers)
            .map(|_| {
                let (start, end, deadline, failure, record, append) =
                    (&start, &end, &deadline, &failure, &record, &append);
                scope.spawn(move || {
                    let mut histogram = new_histogram();
                    let mut appends = 0u64;
                    start.wait();
                    let until = deadline.lock().expect("deadline").expect("set");
                    loop {
                        let began = Instant::now();
                        if began >= until {
                            break;
                        }
                        if let Err(e) = append(record) {
                            failure.lock().expect("failure").get_or_insert(e);
                            break;
                        }
                        let micros = began.elapsed().as_micros() as u64;
                        histogram.saturating_record(micros.max(1));
                        appends += 1;
                    }
                    end.wait();
                    (appends, histogram)
                })
            })
            .collect();
        let began = Instant::now();
        *deadline.lock().expect("deadline") = Some(began + config.runtime);
        start.wait();
        end.wait();
        let elapsed = began.elapsed();
        let mut histogram = new_histogram();
        let mut appends = 0;
        for handle in handles {
            let (n, h) = handle.join().expect("writer thread");
            appends += n;
            histogram.add(&h).expect("same bounds");
        }
        (appends, histogram, elapsed)
    });
    if let Some(e) = failure.into_inner().expect("failure") {
        return Err(format!("{name}: {e}"));
    }
    let seconds = elapsed.as_secs_f64();
    Ok(Row {
        journal: name.to_string(),
        writers: config.writers,
        record_bytes: config.record_bytes,
        appends,
        appends_per_s: appends as f64 / seconds,
        bytes_per_s: (appends * config.record_bytes as u64) as f64 / seconds,
        commit_us_p50: histogram.value_at_quantile(0.50) as f64,
        commit_us_p99: histogram.value_at_quantile(0.99) as f64,
        commit_us_p999: histogram.value_at_quantile(0.999) as f64,
        batches: None,
        allocs_per_append: None,
    })
}

/// Field-wise medians over rounds (appends and batches too).
fn median_row(rows: &[Row]) -> Row {
    let field = |get: &dyn Fn(&Row) -> f64| median(&mut rows.iter().map(get).collect::<Vec<_>>());
    let batches = if rows.iter().all(|r| r.batches.is_some()) {
        Some(field(&|r| r.batches.unwrap_or(0) as f64).round() as u64)
    } else {
        None
    };
    Row {
        journal: rows[0].journal.clone(),
        writers: rows[0].writers,
        record_bytes: rows[0].record_bytes,
        appends: field(&|r| r.appends as f64).round() as u64,
        appends_per_s: field(&|r| r.appends_per_s),
        bytes_per_s: field(&|r| r.bytes_per_s),
        commit_us_p50: field(&|r| r.commit_us_p50),
        commit_us_p99: field(&|r| r.commit_us_p99),
        commit_us_p999: field(&|r| r.commit_us_p999),
        batches,
        allocs_per_append: None,
    }
}

fn bench_directfile(config: &Config) -> Result<Row, String> {
    let mut bench = BenchConfig::new(&config.dir);
    bench.writers = config.writers;
    bench.record_bytes = config.record_bytes;
    bench.runtime = config.runtime;
    let results = tools::bench(&bench).map_err(|e| format!("directfile: {e}"))?;
    results
        .first()
        .map(Row::from_directfile)
        .ok_or_else(|| "directfile: no result".to_string())
}

fn bench_okaywal(config: &Config) -> Result<Row, String> {
    let scratch = Scratch::new(&config.dir, "okaywal")?;
    let log = okaywal::Configuration::default_for(&scratch.0)
        .open(okaywal::LogVoid)
        .map_err(|e| format!("okaywal: open: {e}"))?;
    let row = measure_threads(config, "okaywal", |record| {
        let mut entry = log.begin_entry().map_err(|e| e.to_string())?;
        entry.write_chunk(record).map_err(|e| e.to_string())?;
        entry.commit().map(|_| ()).map_err(|e| e.to_string())
    });
    let _ = log.shutdown();
    row
}

fn bench_fsys(config: &Config, direct: bool) -> Result<Row, String> {
    let name = if direct { "fsys-direct" } else { "fsys" };
    let scratch = Scratch::new(&config.dir, name)?;
    let fs = fsys::builder()
        .build()
        .map_err(|e| format!("{name}: builder: {e}"))?;
    let path = scratch.0.join("journal.wal");
    let journal = if direct {
        fs.journal_with(&path, fsys::JournalOptions::new().direct(true))
    } else {
        fs.journal(&path)
    }
    .map_err(|e| format!("{name}: open: {e}"))?;
    if direct && !journal.is_direct_active() {
        return Err(format!(
            "{name}: O_DIRECT asked for but not active on this file system"
        ));
    }
    let row = measure_threads(config, name, |record| {
        let lsn = journal.append(record).map_err(|e| e.to_string())?;
        journal.sync_through(lsn).map_err(|e| e.to_string())
    });
    let _ = journal.close();
    row
}

/// fio's 4 KiB O_DSYNC sequential write at QD1 (psync, O_DIRECT) in the same directory: the
/// device's floor for one durable write, the 1-writer target's baseline. Its "appends" are
/// writes and its commit latency fio's completion latency.
fn bench_fio(config: &Config) -> Result<Row, String> {
    let scratch = Scratch::new(&config.dir, "fio")?;
    let output = std::process::Command::new("fio")
        .args([
            "--name=directfile-peers",
            &format!("--filename={}", scratch.0.join("fio.dat").display()),
            "--size=64m",
            "--rw=write",
            "--bs=4k",
            "--iodepth=1",
            "--ioengine=psync",
            "--direct=1",
            "--sync=dsync",
            &format!("--runtime={}ms", config.runtime.as_millis().max(1)),
            "--time_based",
            "--output-format=json",
        ])
        .output()
        .map_err(|e| format!("fio: cannot run it ({e}); apt-get install fio"))?;
    if !output.status.success() {
        return Err(format!(
            "fio failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("fio: unreadable JSON output: {e}"))?;
    let write = &json["jobs"][0]["write"];
    let percentile = |p: &str| {
        write["clat_ns"]["percentile"][p]
            .as_f64()
            .map(|ns| ns / 1000.0)
            .ok_or_else(|| format!("fio: no {p} percentile in its output"))
    };
    let iops = write["iops"].as_f64().ok_or("fio: no iops in its output")?;
    let runtime_s = write["runtime"].as_f64().unwrap_or(0.0) / 1000.0;
    Ok(Row {
        journal: "fio".to_string(),
        writers: 1,
        record_bytes: 4096,
        appends: (iops * runtime_s) as u64,
        appends_per_s: iops,
        bytes_per_s: iops * 4096.0,
        commit_us_p50: percentile("50.000000")?,
        commit_us_p99: percentile("99.000000")?,
        commit_us_p999: percentile("99.900000")?,
        batches: None,
        allocs_per_append: None,
    })
}

fn bench_raft_engine(config: &Config) -> Result<Row, String> {
    let scratch = Scratch::new(&config.dir, "raft-engine")?;
    let engine_config = raft_engine::Config {
        dir: scratch.0.to_string_lossy().into_owned(),
        ..raft_engine::Config::default()
    };
    let engine =
        raft_engine::Engine::open(engine_config).map_err(|e| format!("raft-engine: open: {e}"))?;
    let next_index = AtomicU64::new(0);
    measure_threads(config, "raft-engine", |record| {
        let index = next_index.fetch_add(1, Ordering::Relaxed);
        let mut batch = raft_engine::LogBatch::default();
        batch
            .put(1, index.to_be_bytes().to_vec(), record.to_vec())
            .map_err(|e| e.to_string())?;
        engine
            .write(&mut batch, true)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

fn bench_rocksdb(config: &Config) -> Result<Row, String> {
    let scratch = Scratch::new(&config.dir, "rocksdb")?;
    let db = rocksdb::DB::open_default(&scratch.0).map_err(|e| format!("rocksdb: open: {e}"))?;
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    let next_index = AtomicU64::new(0);
    measure_threads(config, "rocksdb", |record| {
        let index = next_index.fetch_add(1, Ordering::Relaxed);
        db.put_opt(index.to_be_bytes(), record, &sync)
            .map_err(|e| e.to_string())
    })
}

pub fn main(config: Config) -> Result<(), String> {
    let journals: Vec<&str> = if config.only.is_empty() {
        // fio is the 1-writer baseline (one durable 4 KiB write at a time).
        JOURNALS
            .iter()
            .copied()
            .filter(|&j| j != "fio" || config.writers == 1)
            .collect()
    } else {
        let mut picked = Vec::new();
        for name in &config.only {
            let journal = JOURNALS
                .iter()
                .find(|j| **j == name.as_str())
                .ok_or_else(|| format!("unknown journal {name:?}: one of {JOURNALS:?}"))?;
            picked.push(*journal);
        }
        picked
    };
    fs::create_dir_all(&config.dir).map_err(|e| format!("mkdir {}: {e}", config.dir.display()))?;
    let mut per_journal: Vec<Vec<Row>> = vec![Vec::new(); journals.len()];
    let mut left_out: Vec<(&str, String)> = Vec::new();
    for round in 0..config.rounds {
        // Alternate: rotate the order every round.
        for k in 0..journals.len() {
            let index = (k + round) % journals.len();
            let journal = journals[index];
            if left_out.iter().any(|(j, _)| *j == journal) {
                continue;
            }
            let outcome = match journal {
                "directfile" => bench_directfile(&config),
                "okaywal" => bench_okaywal(&config),
                "fsys" => bench_fsys(&config, false),
                "fsys-direct" => bench_fsys(&config, true),
                "raft-engine" => bench_raft_engine(&config),
                "rocksdb" => bench_rocksdb(&config),
                _ => bench_fio(&config),
            };
            match outcome {
                Ok(row) => {
                    eprintln!(
                        "round {}/{} {:<12} {:>10.0} appends/s  commit p50 {:>7.0} us  p99 {:>7.0} us",
                        round + 1,
                        config.rounds,
                        row.journal,
                        row.appends_per_s,
                        row.commit_us_p50,
                        row.commit_us_p99
                    );
                    per_journal[index].push(row);
                }
                Err(reason) => {
                    eprintln!("round {} {journal}: left out: {reason}", round + 1);
                    left_out.push((journal, reason));
                }
            }
        }
    }
    let rows: Vec<Row> = journals
        .iter()
        .enumerate()
        .filter(|(_, j)| !left_out.iter().any(|(l, _)| l == *j))
        .filter(|(i, _)| !per_journal[*i].is_empty())
        .map(|(i, _)| median_row(&per_journal[i]))
        .collect();
    if config.json {
        for row in &rows {
            println!("{}", row.to_json());
        }
    } else {
        let base = rows.iter().find(|r| r.journal == "directfile");
        println!(
            "journal: {} writers x {} B, each append durable before the next, {:.1}s, rounds={} (medians)",
            config.writers,
            config.record_bytes,
            config.runtime.as_secs_f64(),
            config.rounds
        );
        println!(
            "{:<12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>12}",
            "journal", "appends/s", "MiB/s", "p50 us", "p99 us", "p99.9 us", "df/this"
        );
        for row in &rows {
            let ratio = base.map_or("-".to_string(), |b| {
                format!("{:.2}x", b.appends_per_s / row.appends_per_s)
            });
            println!(
                "{:<12} {:>12.0} {:>10.2} {:>10.0} {:>10.0} {:>10.0} {:>12}",
                row.journal,
                row.appends_per_s,
                row.bytes_per_s / (1024.0 * 1024.0),
                row.commit_us_p50,
                row.commit_us_p99,
                row.commit_us_p999,
                ratio
            );
        }
    }
    let ours = rows.iter().find(|r| r.journal == "directfile");
    let fio = rows.iter().find(|r| r.journal == "fio");
    if let (Some(ours), Some(fio), false) = (ours, fio, config.json) {
        println!(
            "directfile commit p50 / fio O_DSYNC 4 KiB QD1 p50 = {:.0} / {:.0} = {:.2}",
            ours.commit_us_p50,
            fio.commit_us_p50,
            ours.commit_us_p50 / fio.commit_us_p50
        );
    }
    for (journal, reason) in &left_out {
        eprintln!("left out {journal}: {reason}");
    }
    if rows.is_empty() {
        return Err("no journal ran".to_string());
    }
    Ok(())
}
