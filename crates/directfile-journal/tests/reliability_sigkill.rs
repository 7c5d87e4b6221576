//! A real process crash: a writer process is killed with SIGKILL at random moments, 50 times;
//! after each kill the journal is reopened and every LSN the writer had reported as
//! acknowledged must be there, byte for byte (checked by length and CRC32C).
//!
//! The test binary re-executes itself as the writer: with `SIGKILL_WRITER_DIR` set,
//! `sigkill_writer_child` opens the journal in that directory (`Journal::open`: directfile,
//! O_DIRECT, write-through), prints `READY`, and appends from 4 threads, printing
//! `ACK <lsn> <len> <crc32c>` (flushed) after each acknowledgement. Files live under
//! `CARGO_TARGET_TMPDIR` (a disk file system, never tmpfs).
//!
//! `SIGKILL_ROUNDS=500 cargo test -p directfile-journal --release --test reliability_sigkill -- --nocapture`
//! runs more rounds.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use directfile_journal::storage::CrashRng;
use directfile_journal::{Journal, JournalOptions, Lsn};

const CHILD_ENV: &str = "SIGKILL_WRITER_DIR";

fn options() -> JournalOptions {
    JournalOptions {
        segment_bytes: 256 << 10,
        batch_bytes_max: 64 << 10,
        ..JournalOptions::default()
    }
}

/// The writer (runs only in the child process).
#[test]
fn sigkill_writer_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    futures::executor::block_on(async {
        let (journal, report) = match Journal::open(&dir, options()).await {
            Ok(opened) => opened,
            Err(error) => {
                println!("\nOPEN-FAILED {error}");
                std::process::exit(3);
            }
        };
        // On its own line: libtest has printed "test sigkill_writer_child ... " without one.
        println!("\nREADY {}", report.next_lsn);
        std::io::stdout().flush().unwrap();
        let journal = &journal;
        std::thread::scope(|scope| {
            for task in 0..4u64 {
                scope.spawn(move || {
                    let mut rng = CrashRng::new(u64::from(std::process::id()) * 8 + task);
                    loop {
                        let len = 1 + rng.below(2000) as usize;
                        let payload: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                        let lsn =
                            futures::executor::block_on(journal.append(&payload)).expect("append");
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {} {} {}", lsn.0, len, crc32c::crc32c(&payload))
                            .unwrap();
                        out.flush().unwrap();
                    }
                });
            }
        });
    });
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_record() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let rounds: u64 = std::env::var("SIGKILL_ROUNDS")
        .map(|v| v.parse().expect("SIGKILL_ROUNDS is a number"))
        .unwrap_or(50);
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("sigkill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = CrashRng::new(7);
    // Every acknowledged LSN ever reported: (len, crc).
    let mut acknowledged: BTreeMap<u64, (usize, u32)> = BTreeMap::new();
    let started = Instant::now();
    let mut torn_tails = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "sigkill_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for READY, then kill at a random moment 0..200 ms later.
        let ready_deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = lines
                .recv_timeout(ready_deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("round {round}: the writer never got READY"));
            if line.starts_with("READY") {
                break;
            }
            assert!(!line.starts_with("OPEN-FAILED"), "round {round}: {line}");
        }
        std::thread::sleep(Duration::from_micros(rng.below(200_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let mut acks_this_round = 0;
        for line in lines.try_iter() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() == 4 && fields[0] == "ACK" {
                let lsn: u64 = fields[1].parse().unwrap();
                acknowledged.insert(
                    lsn,
                    (fields[2].parse().unwrap(), fields[3].parse().unwrap()),
                );
                acks_this_round += 1;
            }
        }
        // Reopen and check every acknowledged LSN, of this round and all before.
        futures::executor::block_on(async {
            let (journal, report) = Journal::open(&dir, options())
                .await
                .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
            torn_tails += usize::from(report.torn_tail.is_some());
            let mut reader = journal.reader(Lsn(1));
            let mut expected_lsn = 1;
            let mut found = 0;
            while let Some(record) = reader.next().await.unwrap() {
                assert_eq!(
                    record.lsn.0, expected_lsn,
                    "round {round}: LSNs not consecutive"
                );
                expected_lsn += 1;
                if let Some(&(len, crc)) = acknowledged.get(&record.lsn.0) {
                    assert_eq!(
                        (record.payload.len(), crc32c::crc32c(record.payload)),
                        (len, crc),
                        "round {round}: LSN {} differs from what was acknowledged",
                        record.lsn
                    );
                    found += 1;
                }
            }
            assert_eq!(
                found,
                acknowledged.len(),
                "round {round}: acknowledged LSNs missing (last acknowledged {:?}, journal ends at {})",
                acknowledged.keys().last(),
                expected_lsn - 1
            );
            eprintln!(
                "round {round}: {acks_this_round} acks, journal holds {} records ({} acknowledged), {}",
                expected_lsn - 1,
                acknowledged.len(),
                report.torn_tail.map_or("no torn tail".into(), |t| t.to_string())
            );
        });
    }
    println!(
        "{rounds} SIGKILLs, {} acknowledged records all intact, {torn_tails} torn tails truncated, {:.1?}",
        acknowledged.len(),
        started.elapsed()
    );
    assert!(!acknowledged.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
