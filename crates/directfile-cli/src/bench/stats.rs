//! Latency histograms, IOPS over time, and the numbers a bench reports (one `Measurement` per
//! backend and round, medians across rounds).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::alloc_count::allocation_count;
use crate::args::Rw;
use crate::sys;

/// Width of one IOPS-over-time bucket.
pub const TIMELINE_INTERVAL: Duration = Duration::from_millis(100);

/// Latencies are recorded in nanoseconds, from 1 ns to 100 s, with 3 significant digits
/// (0.1% resolution). With bounds fixed up front, recording never allocates.
const LATENCY_NS_MAX: u64 = 100_000_000_000;

/// One in-flight op's (or one worker's) record of completions: allocated before the measured
/// phase, then `record` is allocation-free.
pub struct Recorder {
    pub latency_ns: Histogram<u64>,
    /// Completions per [`TIMELINE_INTERVAL`] since the phase start.
    pub completions_per_interval: Vec<u64>,
    pub ops: u64,
}

impl Recorder {
    pub fn new(runtime: Duration) -> Recorder {
        // Buckets for the whole runtime plus slack for ops that complete after the deadline.
        let intervals = (runtime.as_nanos() / TIMELINE_INTERVAL.as_nanos()) as usize + 20;
        Recorder {
            latency_ns: new_histogram(),
            completions_per_interval: vec![0; intervals],
            ops: 0,
        }
    }

    /// Records one op that ran from `started` to `finished`, `phase_start` being the measured
    /// phase's start. No allocation.
    #[inline]
    pub fn record(&mut self, phase_start: Instant, started: Instant, finished: Instant) {
        let latency = finished.saturating_duration_since(started).as_nanos() as u64;
        self.latency_ns.saturating_record(latency.max(1));
        let since_start = finished.saturating_duration_since(phase_start).as_nanos();
        let interval = (since_start / TIMELINE_INTERVAL.as_nanos()) as usize;
        let last = self.completions_per_interval.len() - 1;
        self.completions_per_interval[interval.min(last)] += 1;
        self.ops += 1;
    }

    /// Adds `other`'s records into `self`.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.latency_ns.add(&other.latency_ns);
        for (mine, theirs) in self
            .completions_per_interval
            .iter_mut()
            .zip(&other.completions_per_interval)
        {
            *mine += theirs;
        }
        self.ops += other.ops;
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("histogram bounds are valid")
}

/// Process-wide counters around the measured phase: wall clock, allocations, CPU time.
pub struct Phase {
    pub start: Instant,
    allocations: u64,
    cpu_user: Duration,
    cpu_system: Duration,
}

/// What a [`Phase`] measured.
pub struct PhaseTotals {
    pub elapsed: Duration,
    pub allocations: u64,
    pub cpu_user: Duration,
    pub cpu_system: Duration,
}

impl Phase {
    pub fn begin() -> Phase {
        let (cpu_user, cpu_system) = sys::cpu_times();
        let allocations = allocation_count();
        Phase {
            start: Instant::now(),
            allocations,
            cpu_user,
            cpu_system,
        }
    }

    pub fn end(&self) -> PhaseTotals {
        let elapsed = self.start.elapsed();
        let allocations = allocation_count() - self.allocations;
        let (cpu_user, cpu_system) = sys::cpu_times();
        PhaseTotals {
            elapsed,
            allocations,
            cpu_user: cpu_user.saturating_sub(self.cpu_user),
            cpu_system: cpu_system.saturating_sub(self.cpu_system),
        }
    }
}

/// The workload a measurement ran, as reported.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadLabel {
    pub rw: Rw,
    pub bs_bytes: u64,
    pub qd: u32,
    pub dsync: bool,
}

/// The result of one run of one backend: the JSON fields plus the data for the plot.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub backend: String,
    pub workload: WorkloadLabel,
    pub runtime_s: f64,
    pub ops: u64,
    pub iops: f64,
    pub bw_bytes_per_s: f64,
    pub lat_us_p50: f64,
    pub lat_us_p99: f64,
    pub lat_us_p999: f64,
    pub lat_us_max: f64,
    /// `None` where we cannot count (fio runs in another process).
    pub allocs_per_op: Option<f64>,
    pub cpu_usr_s: f64,
    pub cpu_sys_s: f64,
    /// (latency in µs, fraction of ops at or below it), ascending: the CDF for the plot.
    pub latency_cdf: Vec<(f64, f64)>,
    /// IOPS in each [`TIMELINE_INTERVAL`] (whole intervals only); empty if unknown.
    pub iops_timeline: Vec<f64>,
}

impl Measurement {
    /// Builds a measurement from merged records and the phase totals.
    pub fn from_records(
        backend: &str,
        workload: WorkloadLabel,
        records: &Recorder,
        totals: &PhaseTotals,
    ) -> Measurement {
        let seconds = totals.elapsed.as_secs_f64().max(1e-9);
        let histogram = &records.latency_ns;
        let us = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        let ops = records.ops;
        let whole_intervals = (totals.elapsed.as_nanos() / TIMELINE_INTERVAL.as_nanos()) as usize;
        let per_second = 1.0 / TIMELINE_INTERVAL.as_secs_f64();
        Measurement {
            backend: backend.to_string(),
            workload,
            runtime_s: seconds,
            ops,
            iops: ops as f64 / seconds,
            bw_bytes_per_s: ops as f64 * workload.bs_bytes as f64 / seconds,
            lat_us_p50: us(0.50),
            lat_us_p99: us(0.99),
            lat_us_p999: us(0.999),
            lat_us_max: histogram.max() as f64 / 1000.0,
            allocs_per_op: Some(if ops == 0 {
                0.0
            } else {
                totals.allocations as f64 / ops as f64
            }),
            cpu_usr_s: totals.cpu_user.as_secs_f64(),
            cpu_sys_s: totals.cpu_system.as_secs_f64(),
            latency_cdf: cdf_points(histogram),
            iops_timeline: records
                .completions_per_interval
                .iter()
                .take(whole_intervals)
                .map(|&count| count as f64 * per_second)
                .collect(),
        }
    }

    /// The JSON object with exactly the documented fields (as `fio-baseline` names them).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "backend": self.backend,
            "rw": self.workload.rw.as_str(),
            "bs_bytes": self.workload.bs_bytes,
            "qd": self.workload.qd,
            "dsync": self.workload.dsync,
            "runtime_s": round_to(self.runtime_s, 3),
            "ops": self.ops,
            "iops": self.iops.round(),
            "bw_bytes_per_s": self.bw_bytes_per_s.round(),
            "lat_us_p50": round_to(self.lat_us_p50, 1),
            "lat_us_p99": round_to(self.lat_us_p99, 1),
            "lat_us_p999": round_to(self.lat_us_p999, 1),
            "lat_us_max": round_to(self.lat_us_max, 1),
            "allocs_per_op": self.allocs_per_op.map(|value| round_to(value, 3)),
            "cpu_usr_s": round_to(self.cpu_usr_s, 3),
            "cpu_sys_s": round_to(self.cpu_sys_s, 3),
        })
    }
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// CDF sample points: dense over the body, then the tail out to the maximum.
fn cdf_points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut quantiles: Vec<f64> = (0..=200).map(|step| step as f64 / 200.0 * 0.99).collect();
    quantiles.extend([0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0]);
    quantiles
        .into_iter()
        .map(|quantile| {
            (
                histogram.value_at_quantile(quantile) as f64 / 1000.0,
                quantile,
            )
        })
        .collect()
}

/// The median of `values` (mean of the two middle ones for an even count); NaN if empty.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// Per-field medians of several rounds of one backend; the plot data comes from the round whose
/// IOPS is closest to the median.
pub fn median_measurement(rounds: &[Measurement]) -> Measurement {
    assert!(!rounds.is_empty(), "median of no rounds");
    let field = |get: &dyn Fn(&Measurement) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(get).collect();
        median(&mut values)
    };
    let iops = field(&|m| m.iops);
    let representative = rounds
        .iter()
        .min_by(|a, b| (a.iops - iops).abs().total_cmp(&(b.iops - iops).abs()))
        .expect("at least one round");
    let allocs_per_op = if rounds.iter().all(|m| m.allocs_per_op.is_some()) {
        Some(field(&|m| m.allocs_per_op.unwrap_or(0.0)))
    } else {
        None
    };
    Measurement {
        backend: representative.backend.clone(),
        workload: representative.workload,
        runtime_s: field(&|m| m.runtime_s),
        ops: field(&|m| m.ops as f64).round() as u64,
        iops,
        bw_bytes_per_s: field(&|m| m.bw_bytes_per_s),
        lat_us_p50: field(&|m| m.lat_us_p50),
        lat_us_p99: field(&|m| m.lat_us_p99),
        lat_us_p999: field(&|m| m.lat_us_p999),
        lat_us_max: field(&|m| m.lat_us_max),
        allocs_per_op,
        cpu_usr_s: field(&|m| m.cpu_usr_s),
        cpu_sys_s: field(&|m| m.cpu_sys_s),
        latency_cdf: representative.latency_cdf.clone(),
        iops_timeline: representative.iops_timeline.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label() -> WorkloadLabel {
        WorkloadLabel {
            rw: Rw::Randwrite,
            bs_bytes: 4096,
            qd: 1,
            dsync: false,
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let start = Instant::now();
        let mut recorder = Recorder::new(Duration::from_secs(1));
        // 1000 ops of 1..=1000 µs: p50 = 500 µs, p99 = 990 µs, max = 1000 µs.
        for micros in 1..=1000u64 {
            let finished = start + Duration::from_micros(micros);
            recorder.record(start, start, finished);
        }
        let totals = PhaseTotals {
            elapsed: Duration::from_secs(1),
            allocations: 500,
            cpu_user: Duration::from_millis(10),
            cpu_system: Duration::from_millis(20),
        };
        let m = Measurement::from_records("test", label(), &recorder, &totals);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(close(m.lat_us_p50, 500.0), "p50 {}", m.lat_us_p50);
        assert!(close(m.lat_us_p99, 990.0), "p99 {}", m.lat_us_p99);
        assert!(close(m.lat_us_p999, 999.0), "p999 {}", m.lat_us_p999);
        assert!(close(m.lat_us_max, 1000.0), "max {}", m.lat_us_max);
        assert_eq!(m.ops, 1000);
        assert!((m.iops - 1000.0).abs() < 1e-6);
        assert!((m.bw_bytes_per_s - 4096.0 * 1000.0).abs() < 1e-3);
        assert_eq!(m.allocs_per_op, Some(0.5));
        // All completions fall in the first 100 ms interval; 10 whole intervals in 1 s.
        assert_eq!(m.iops_timeline.len(), 10);
        assert!((m.iops_timeline[0] - 10_000.0).abs() < 1e-6);
        // The CDF ends at the maximum with fraction 1 and never decreases.
        assert_eq!(m.latency_cdf.last().map(|p| p.1), Some(1.0));
        assert!(m
            .latency_cdf
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn recording_does_not_allocate() {
        let mut recorder = Recorder::new(Duration::from_secs(1));
        let start = Instant::now();
        let before = crate::alloc_count::thread_allocation_count();
        for step in 0..10_000u64 {
            let finished = start + Duration::from_nanos(step * 977 + 1);
            recorder.record(start, start, finished);
        }
        // Beyond the histogram's upper bound and past the timeline's end: still no allocation.
        recorder.record(start, start, start + Duration::from_secs(200));
        assert_eq!(crate::alloc_count::thread_allocation_count(), before);
        assert_eq!(recorder.ops, 10_001);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn json_has_exactly_the_documented_fields() {
        let recorder = Recorder::new(Duration::from_secs(1));
        let totals = PhaseTotals {
            elapsed: Duration::from_secs(1),
            allocations: 0,
            cpu_user: Duration::ZERO,
            cpu_system: Duration::ZERO,
        };
        let value = Measurement::from_records("std", label(), &recorder, &totals).to_json();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        let mut expected = vec![
            "backend",
            "rw",
            "bs_bytes",
            "qd",
            "dsync",
            "runtime_s",
            "ops",
            "iops",
            "bw_bytes_per_s",
            "lat_us_p50",
            "lat_us_p99",
            "lat_us_p999",
            "lat_us_max",
            "allocs_per_op",
            "cpu_usr_s",
            "cpu_sys_s",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }
}
