//! Runs `directfile journal {bench, dump, verify}`: bench prints JSON with exactly the documented
//! fields and cleans up (also on Ctrl-C); dump and verify read a journal made here, and verify's
//! exit status tells healthy (0), torn tail (1) and corruption (2) apart; bad input is one line.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use directfile_journal::recovery::scan_segment;
use directfile_journal::storage::segment_file_name;
use directfile_journal::{Journal, JournalOptions, StdStorage};

mod common;
use common::{entries, run_in};

/// A fresh directory for one of these tests.
fn scratch(name: &str) -> PathBuf {
    common::scratch(&format!("journal-{name}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Exit status `code`, stderr exactly one line starting "directfile: error:" and containing
/// `needle`, stdout empty.
fn assert_one_line_error(output: &Output, code: i32, needle: &str) {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.starts_with("directfile: error: "), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    assert!(output.stdout.is_empty(), "stdout: {:?}", stdout(output));
}

const JSON_FIELDS: [&str; 12] = [
    "journal",
    "writers",
    "record_bytes",
    "appends",
    "appends_per_s",
    "bytes_per_s",
    "commit_us_p50",
    "commit_us_p99",
    "commit_us_p999",
    "batches",
    "records_per_batch_mean",
    "allocs_per_append",
];

fn parse_results(output: &Output) -> Vec<serde_json::Map<String, serde_json::Value>> {
    assert!(output.status.success(), "{}", stderr(output));
    stdout(output)
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
                .as_object()
                .unwrap()
                .clone()
        })
        .collect()
}

fn number(result: &serde_json::Map<String, serde_json::Value>, key: &str) -> f64 {
    result[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {result:?}"))
}

fn check_result(
    result: &serde_json::Map<String, serde_json::Value>,
    writers: u64,
    record_bytes: u64,
) {
    let keys: Vec<&str> = result.keys().map(String::as_str).collect();
    assert_eq!(keys, JSON_FIELDS, "fields and their order");
    assert_eq!(result["writers"], writers);
    assert_eq!(result["record_bytes"], record_bytes);
    let appends = number(result, "appends");
    assert!(appends > 0.0, "{result:?}");
    assert!(number(result, "appends_per_s") > 0.0);
    let bytes = number(result, "bytes_per_s");
    assert!(
        (bytes - number(result, "appends_per_s") * record_bytes as f64).abs() <= bytes * 0.01 + 1.0,
        "{result:?}"
    );
    let (p50, p99, p999) = (
        number(result, "commit_us_p50"),
        number(result, "commit_us_p99"),
        number(result, "commit_us_p999"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{result:?}");
    assert!(number(result, "batches") > 0.0);
    assert!(
        number(result, "records_per_batch_mean") >= 1.0,
        "{result:?}"
    );
}

#[test]
fn bench_json_has_the_documented_fields_and_cleans_up() {
    let dir = scratch("bench-json");
    let output = run_in(&dir, &["journal", "bench", "--runtime", "1s", "--json"]);
    let results = parse_results(&output);
    assert_eq!(results.len(), 1, "{}", stdout(&output));
    let ours = &results[0];
    check_result(ours, 64, 256);
    assert_eq!(ours["journal"], "directfile");
    // No allocation per append: what the counter sees in the measured window is the fixed cost
    // of starting the writers (their executors and tasks), not one per append.
    let allocs = number(ours, "allocs_per_append") * number(ours, "appends");
    assert!(
        allocs <= 8.0 * 64.0 + 512.0,
        "{allocs} allocations in the measured window: {ours:?}"
    );
    assert!(entries(&dir).is_empty(), "left {:?}", entries(&dir));

    // With DIR and --compare: the two baselines too, each a line of its own.
    let output = run_in(
        &dir,
        &[
            "journal",
            "bench",
            ".",
            "--writers",
            "4",
            "--record-bytes",
            "1k",
            "--runtime",
            "300ms",
            "--compare",
            "--json",
        ],
    );
    let results = parse_results(&output);
    let journals: Vec<&str> = results
        .iter()
        .map(|r| r["journal"].as_str().unwrap())
        .collect();
    assert_eq!(
        journals,
        ["directfile", "naive", "buffered-group-commit"],
        "{}",
        stdout(&output)
    );
    for result in &results {
        check_result(result, 4, 1024);
    }
    // The naive journal syncs once per record.
    assert_eq!(results[1]["batches"], results[1]["appends"]);
    assert!(entries(&dir).is_empty(), "left {:?}", entries(&dir));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn bench_table_compares_with_the_best_baseline() {
    let dir = scratch("bench-table");
    let output = run_in(
        &dir,
        &[
            "journal",
            "bench",
            "--writers",
            "2",
            "--runtime",
            "300ms",
            "--compare",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("journal bench: 2 writers x 256 B records"),
        "{text}"
    );
    for needle in [
        "appends/s",
        "x best baseline",
        "p99.9 µs",
        "records/batch",
        "allocs/append",
    ] {
        assert!(text.contains(needle), "{needle} missing in {text}");
    }
    for journal in ["directfile", "naive", "buffered-group-commit"] {
        assert!(
            text.lines().any(|line| line.starts_with(journal)),
            "no {journal} row in {text}"
        );
    }
    let fio_installed = Command::new("fio")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if fio_installed {
        assert!(
            text.contains("fio 4 KiB O_DSYNC write QD1") && text.contains("/ fio p50 ="),
            "{text}"
        );
    }
    assert!(entries(&dir).is_empty(), "left {:?}", entries(&dir));
    let _ = fs::remove_dir_all(&dir);
}

/// Unix only: the test sends SIGINT with kill(1).
#[cfg(unix)]
#[test]
fn bench_interrupted_removes_its_directory() {
    let dir = scratch("bench-interrupt");
    let mut child = common::spawn_in(
        &dir,
        &["journal", "bench", "--runtime", "30s", "--writers", "4"],
        false,
    );
    common::wait_for("bench never created its directory", || {
        (!entries(&dir).is_empty()).then_some(())
    });
    // Into the measurement, with the journal's files open.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(128 + 2), "{exit:?}");
    assert!(entries(&dir).is_empty(), "left {:?}", entries(&dir));
    let _ = fs::remove_dir_all(&dir);
}

/// A journal with 60 records in 64 KiB segments (several of them), written through the
/// library; returns its directory and segment numbers.
fn written_journal(name: &str) -> (PathBuf, Vec<u64>) {
    let dir = scratch(name).join("journal");
    let options = JournalOptions {
        segment_bytes: 64 << 10,
        batch_bytes_max: 16 << 10,
        ..JournalOptions::default()
    };
    futures::executor::block_on(async {
        let (journal, _) = Journal::open_with_storage(StdStorage::new(&dir).unwrap(), options)
            .await
            .unwrap();
        for index in 0..60u32 {
            journal
                .append(&vec![index as u8; 500 + index as usize])
                .await
                .unwrap();
        }
        let segments = journal.segment_numbers();
        (dir, segments)
    })
}

#[test]
fn dump_and_verify_a_journal() {
    let (dir, segments) = written_journal("dump-verify");
    assert!(segments.len() > 1, "{segments:?}");
    let path = dir.to_str().unwrap();
    let cwd = dir.parent().unwrap();

    let output = run_in(cwd, &["journal", "dump", path]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for needle in [
        "segments",
        "batch at offset 4096",
        "record LSN 1: 500 B",
        "record LSN 60: 559 B",
        "end: clean",
    ] {
        assert!(text.contains(needle), "{needle} missing in {text}");
    }

    let output = run_in(cwd, &["journal", "verify", path]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).contains("healthy"), "{}", stdout(&output));
    assert!(stdout(&output).contains("records: 60, LSNs 1..60"));

    // Cut the newest batch in half, as a crash mid-write leaves it: a torn tail, exit 1.
    let last = dir.join(segment_file_name(*segments.last().unwrap()));
    let original = fs::read(&last).unwrap();
    let batch = *scan_segment(*segments.last().unwrap(), &original)
        .batches
        .last()
        .unwrap();
    let file = fs::OpenOptions::new().write(true).open(&last).unwrap();
    file.set_len(batch.offset + batch.padded_bytes / 2).unwrap();
    drop(file);
    let output = run_in(cwd, &["journal", "verify", path]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("TORN TAIL"), "{text}");
    assert!(text.contains(&format!("offset {}", batch.offset)), "{text}");
    let output = run_in(cwd, &["journal", "dump", path]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("DAMAGED"), "{}", stdout(&output));
    fs::write(&last, &original).unwrap();

    // Flip a byte in an early record: corruption, exit 2.
    let first = dir.join(segment_file_name(segments[0]));
    let mut bytes = fs::read(&first).unwrap();
    bytes[4096 + 60] ^= 0x10;
    fs::write(&first, bytes).unwrap();
    let output = run_in(cwd, &["journal", "verify", path]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("CORRUPT"), "{text}");
    assert!(text.contains("offset 4096"), "{text}");

    let _ = fs::remove_dir_all(cwd);
}

#[test]
fn bad_input_is_one_line() {
    let dir = scratch("bad-input");
    fs::write(dir.join("plain-file"), b"not a journal").unwrap();
    fs::create_dir(dir.join("empty")).unwrap();
    let before = {
        let mut names = entries(&dir);
        names.sort();
        names
    };
    let cases: &[(&[&str], i32, &str)] = &[
        (&["journal", "dump"], 2, "<DIR>"),
        (&["journal", "verify"], 2, "<DIR>"),
        (&["journal", "dump", "empty"], 1, "not a journal directory"),
        (
            &["journal", "verify", "empty"],
            3,
            "not a journal directory",
        ),
        (&["journal", "verify", "missing"], 3, "does not exist"),
        (&["journal", "dump", "plain-file"], 1, "not a directory"),
        (&["journal", "frobnicate"], 2, "frobnicate"),
        (&["journal", "bench", "--frobnicate"], 2, "--frobnicate"),
        (&["journal", "bench", "--writers", "0"], 2, "--writers"),
        (&["journal", "bench", "--writers", "many"], 2, "many"),
        (&["journal", "bench", "--record-bytes", "4q"], 2, "4q"),
        (&["journal", "bench", "--record-bytes", "0"], 2, "0"),
        (
            &["journal", "bench", "--runtime", "5 parsecs"],
            2,
            "5 parsecs",
        ),
        (
            &["journal", "bench", "--plot", "no-such-dir/x.svg"],
            1,
            "does not exist",
        ),
        (&["journal", "bench", "missing-dir"], 1, "does not exist"),
        (&["journal", "bench", "plain-file"], 1, "not a directory"),
        (
            &["journal", "bench", "--record-bytes", "2g"],
            1,
            "larger than 1 GiB",
        ),
    ];
    for (args, code, needle) in cases {
        let output = run_in(&dir, args);
        assert_one_line_error(&output, *code, needle);
        let mut after = entries(&dir);
        after.sort();
        assert_eq!(after, before, "{args:?} left files");
    }
    let _ = fs::remove_dir_all(&dir);
}

#[cfg(target_os = "linux")]
#[test]
fn bench_refuses_tmpfs() {
    let Some(tmpfs) = common::tmpfs_mount() else {
        eprintln!("skipped: no tmpfs mount at /dev/shm or /run on this machine");
        return;
    };
    let before = entries(tmpfs);
    let output = Command::new(common::BIN)
        .args(["journal", "bench"])
        .arg(tmpfs)
        .output()
        .unwrap();
    assert_one_line_error(&output, 1, "tmpfs");
    assert_eq!(entries(tmpfs), before);
}
