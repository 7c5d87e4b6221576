//! fio as the reference: the same workload on the same file, parsed from fio's JSON output.
//! Engine choice as `shared/tools/fio-baseline`: psync at QD1 (the latency floor), io_uring
//! above (on Windows `windowsaio`, fio's completion-port engine: not tried, no fio for Windows
//! was at hand); always O_DIRECT; `--sync=dsync` for write-through.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::bench::stats::{Measurement, WorkloadLabel};
use crate::bench::workload::Workload;
use crate::error::{cli_error, CliResult};

/// Whether a runnable `fio` is on PATH.
pub fn is_installed() -> bool {
    Command::new("fio")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

/// fio's engine for queue depths above 1: the platform's own asynchronous I/O.
#[cfg(unix)]
const ASYNC_ENGINE: &str = "io_uring";
#[cfg(windows)]
const ASYNC_ENGINE: &str = "windowsaio";

/// The fio command line for `workload` on `path`.
pub fn command_line(path: &Path, workload: &Workload) -> Vec<String> {
    let engine = if workload.qd == 1 {
        "psync"
    } else {
        ASYNC_ENGINE
    };
    let mut args = vec![
        "--name=directfile-compare".to_string(),
        format!("--filename={}", path.display()),
        format!("--size={}", workload.size),
        format!("--rw={}", workload.rw),
        format!("--bs={}", workload.bs),
        format!("--iodepth={}", workload.qd),
        format!("--ioengine={engine}"),
        "--direct=1".to_string(),
        format!("--runtime={}ms", workload.runtime.as_millis().max(1)),
        "--time_based".to_string(),
        "--output-format=json".to_string(),
    ];
    if workload.dsync {
        args.push("--sync=dsync".to_string());
    }
    args
}

/// Runs fio and converts its result.
pub fn run(path: &Path, workload: &Workload) -> CliResult<Measurement> {
    let output = Command::new("fio")
        .args(command_line(path, workload))
        .stdin(Stdio::null())
        .output()
        .map_err(|err| cli_error!("cannot run fio: {err}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(cli_error!(
            "fio failed ({}): {}",
            output.status,
            stderr.lines().next().unwrap_or("no message")
        ));
    }
    parse(&String::from_utf8_lossy(&output.stdout), workload.label())
}

/// Parses fio's `--output-format=json` (first job; the read or write side per `rw`). Latencies are
/// fio's completion latencies (`clat_ns`), as fio-baseline reports them.
pub fn parse(json_text: &str, workload: WorkloadLabel) -> CliResult<Measurement> {
    // fio may print warnings before the JSON object.
    let start = json_text
        .find('{')
        .ok_or_else(|| cli_error!("fio printed no JSON"))?;
    let root: Value = serde_json::from_str(&json_text[start..])
        .map_err(|err| cli_error!("cannot parse fio's JSON: {err}"))?;
    let job = &root["jobs"][0];
    let side = if workload.rw.is_write() {
        &job["write"]
    } else {
        &job["read"]
    };
    let number = |value: &Value| value.as_f64().unwrap_or(0.0);
    if side.is_null() {
        return Err(cli_error!("fio's JSON has no job result"));
    }
    let runtime_s = number(&side["runtime"]) / 1000.0;
    let clat = &side["clat_ns"];
    let mut percentiles: Vec<(f64, f64)> = clat["percentile"]
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(key, value)| {
                    Some((value.as_f64()? / 1000.0, key.parse::<f64>().ok()? / 100.0))
                })
                .collect()
        })
        .unwrap_or_default();
    percentiles.sort_by(|a, b| a.1.total_cmp(&b.1));
    let at = |fraction: f64| {
        percentiles
            .iter()
            .find(|(_, q)| (q - fraction).abs() < 1e-9)
            .map(|(us, _)| *us)
            .unwrap_or(f64::NAN)
    };
    let lat_us_max = number(&clat["max"]) / 1000.0;
    let mut latency_cdf = percentiles.clone();
    if lat_us_max > 0.0 {
        latency_cdf.push((lat_us_max, 1.0));
    }
    Ok(Measurement {
        backend: "fio".to_string(),
        workload,
        runtime_s,
        ops: number(&side["total_ios"]) as u64,
        iops: number(&side["iops"]),
        bw_bytes_per_s: number(&side["bw_bytes"]),
        lat_us_p50: at(0.50),
        lat_us_p99: at(0.99),
        lat_us_p999: at(0.999),
        lat_us_max,
        allocs_per_op: None,
        cpu_usr_s: number(&job["usr_cpu"]) / 100.0 * runtime_s,
        cpu_sys_s: number(&job["sys_cpu"]) / 100.0 * runtime_s,
        latency_cdf,
        iops_timeline: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Rw;

    const SAMPLE: &str = r#"note: both iodepth >= 1 and synchronous I/O engine are selected
{
  "fio version" : "fio-3.36",
  "jobs" : [ {
      "jobname" : "x", "usr_cpu" : 10.0, "sys_cpu" : 40.0,
      "read" : { "iops" : 0.0, "total_ios" : 0, "runtime" : 0 },
      "write" : {
        "io_bytes" : 40960000, "bw_bytes" : 20480000, "iops" : 5000.0, "runtime" : 2000,
        "total_ios" : 10000,
        "clat_ns" : { "min" : 1000, "max" : 900000, "mean" : 150000.0,
          "percentile" : { "1.000000" : 50000, "50.000000" : 150000, "99.000000" : 400000,
                           "99.900000" : 800000, "99.990000" : 880000 } }
      }
  } ]
}"#;

    #[test]
    fn parses_fio_json() {
        let label = WorkloadLabel {
            rw: Rw::Randwrite,
            bs_bytes: 4096,
            qd: 32,
            dsync: true,
        };
        let m = parse(SAMPLE, label).unwrap();
        assert_eq!(m.backend, "fio");
        assert_eq!(m.ops, 10_000);
        assert_eq!(m.iops, 5000.0);
        assert_eq!(m.bw_bytes_per_s, 20_480_000.0);
        assert_eq!(m.lat_us_p50, 150.0);
        assert_eq!(m.lat_us_p99, 400.0);
        assert_eq!(m.lat_us_p999, 800.0);
        assert_eq!(m.lat_us_max, 900.0);
        assert_eq!(m.runtime_s, 2.0);
        assert!((m.cpu_usr_s - 0.2).abs() < 1e-9 && (m.cpu_sys_s - 0.8).abs() < 1e-9);
        assert_eq!(m.allocs_per_op, None);
        assert_eq!(m.latency_cdf.first(), Some(&(50.0, 0.01)));
        assert_eq!(m.latency_cdf.last(), Some(&(900.0, 1.0)));
    }

    #[test]
    fn rejects_garbage() {
        let label = WorkloadLabel {
            rw: Rw::Read,
            bs_bytes: 4096,
            qd: 1,
            dsync: false,
        };
        assert!(parse("fio: no such option", label).is_err());
        assert!(parse("{\"jobs\": []}", label).is_err());
    }

    #[test]
    fn engine_follows_queue_depth() {
        let mut workload = Workload {
            rw: Rw::Randwrite,
            bs: 4096,
            qd: 1,
            size: 1 << 20,
            runtime: std::time::Duration::from_secs(2),
            dsync: true,
            memory_align: 4096,
            executor: crate::args::ExecutorArg::Own,
            tuning: Default::default(),
        };
        let qd1 = command_line(Path::new("/f"), &workload);
        assert!(qd1.contains(&"--ioengine=psync".to_string()));
        assert!(qd1.contains(&"--sync=dsync".to_string()));
        assert!(qd1.contains(&"--runtime=2000ms".to_string()));
        workload.qd = 32;
        workload.dsync = false;
        let qd32 = command_line(Path::new("/f"), &workload);
        assert!(qd32.contains(&format!("--ioengine={ASYNC_ENGINE}")));
        assert!(qd32.contains(&"--iodepth=32".to_string()));
        assert!(!qd32.iter().any(|arg| arg.starts_with("--sync")));
    }
}
