//! Runs `tools::bench` without the CLI: `journal_bench [DIR] [WRITERS] [RECORD_BYTES] [SECONDS] [--compare] [--json]`.

use std::time::Duration;

use directfile_journal::tools::{bench, BenchConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let mut config = BenchConfig::new(
        positional
            .first()
            .map_or("target".into(), |d| d.to_string()),
    );
    if let Some(writers) = positional.get(1) {
        config.writers = writers.parse().expect("WRITERS is a number");
    }
    if let Some(bytes) = positional.get(2) {
        config.record_bytes = bytes.parse().expect("RECORD_BYTES is a number");
    }
    if let Some(seconds) = positional.get(3) {
        config.runtime = Duration::from_secs_f64(seconds.parse().expect("SECONDS is a number"));
    }
    config.compare = flag("--compare");
    config.std_storage = flag("--std-storage");
    if let Ok(spin) = std::env::var("JOURNAL_SPIN_US") {
        let micros: u64 = spin.parse().expect("JOURNAL_SPIN_US is a number");
        let driver = directfile::Driver::builder()
            .spin(Duration::from_micros(micros))
            .build();
        config.driver = Some(driver.expect("driver"));
    }
    if let Ok(records) = std::env::var("JOURNAL_OVERLAP_RECORDS_MIN") {
        config.options.overlap_records_min = records.parse().expect("a number");
    }
    if let Ok(in_flight) = std::env::var("JOURNAL_IN_FLIGHT") {
        config.options.batches_in_flight_max =
            in_flight.parse().expect("JOURNAL_IN_FLIGHT is a number");
    }
    for result in bench(&config).expect("bench") {
        if flag("--json") {
            println!("{}", result.to_json());
        } else {
            println!("{result}");
        }
    }
}
