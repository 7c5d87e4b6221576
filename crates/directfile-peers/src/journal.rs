//! `journal`: `writers` concurrent writers, each appending `record_bytes`-byte records and
//! waiting for every append to be durable before the next, on directfile-journal, okaywal
//! and fsys's journal.
//!
//! directfile-journal is measured by its own `tools::bench` (its writers are tasks on one
//! local executor per core, awaiting `Journal::append`). okaywal and fsys have blocking APIs,
//! so their writers are OS threads, one per writer, as those crates are meant to be used:
//! okaywal `begin_entry` + `write_chunk` + `commit` (commit returns once the entry is on
//! disk; okaywal syncs concurrent commits together), fsys `append` + `sync_through(lsn)`
//! (its leader/follower group commit). Commit latency is from the start of the append to its
//! durability, in microseconds.

use std::fs;
use std::path::{Path, PathBuf};
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

const JOURNALS: [&str; 4] = ["directfile", "okaywal", "fsys", "fsys-direct"];

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

pub fn main(config: Config) -> Result<(), String> {
    let journals: Vec<&str> = if config.only.is_empty() {
        JOURNALS.to_vec()
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
                _ => bench_fsys(&config, true),
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
    for (journal, reason) in &left_out {
        eprintln!("left out {journal}: {reason}");
    }
    if rows.is_empty() {
        return Err("no journal ran".to_string());
    }
    Ok(())
}
