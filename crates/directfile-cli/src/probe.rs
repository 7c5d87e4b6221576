//! `directfile probe`: what this kernel, file system and device offer for direct I/O.

use std::fs;
use std::io;
use std::path::PathBuf;

use io_uring::opcode;
use serde_json::{json, Value};

use crate::args::ProbeArgs;
use crate::bench::directfile_backend;
use crate::device::{self, BlockDevice};
use crate::error::CliResult;
use crate::sys;
use crate::tempfile::ProbeFile;
use crate::units::format_bytes;

/// The io_uring opcodes directfile's uring driver submits.
const NEEDED_OPCODES: [(&str, u8); 9] = [
    ("READ", opcode::Read::CODE),
    ("WRITE", opcode::Write::CODE),
    ("READV", opcode::Readv::CODE),
    ("WRITEV", opcode::Writev::CODE),
    ("READ_FIXED", opcode::ReadFixed::CODE),
    ("WRITE_FIXED", opcode::WriteFixed::CODE),
    ("FSYNC", opcode::Fsync::CODE),
    ("FALLOCATE", opcode::Fallocate::CODE),
    ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
];

/// Whether io_uring can be set up here, and which of our opcodes the kernel has.
struct UringReport {
    /// `Ok(opcode support)` or `Err(why not)`.
    status: Result<Vec<(&'static str, bool)>, String>,
    /// `kernel.io_uring_disabled` (0 allowed, 1 only for a group, 2 disabled), if present.
    disabled_sysctl: Option<String>,
}

fn probe_uring() -> UringReport {
    let disabled_sysctl = fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|text| text.trim().to_string());
    let status = match io_uring::IoUring::new(8) {
        Ok(ring) => {
            let mut probe = io_uring::Probe::new();
            match ring.submitter().register_probe(&mut probe) {
                Ok(()) => Ok(NEEDED_OPCODES
                    .iter()
                    .map(|&(name, code)| (name, probe.is_supported(code)))
                    .collect()),
                Err(err) => Err(format!(
                    "ring created but IORING_REGISTER_PROBE failed: {err}"
                )),
            }
        }
        Err(err) => Err(explain_uring_setup_error(&err)),
    };
    UringReport {
        status,
        disabled_sysctl,
    }
}

fn explain_uring_setup_error(err: &io::Error) -> String {
    let why = match err.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel has no io_uring (CONFIG_IO_URING off or too old)",
        Some(libc::EPERM) => {
            "not permitted: kernel.io_uring_disabled, or a seccomp filter (containers) blocks it"
        }
        Some(libc::ENOMEM) => "not enough locked memory (raise RLIMIT_MEMLOCK, ulimit -l)",
        Some(libc::EINVAL) => "the kernel rejected the ring parameters (kernel too old)",
        _ => "io_uring_setup(2) failed",
    };
    format!("{why} ({err})")
}

pub fn run(args: ProbeArgs) -> CliResult<()> {
    let target = args.path.clone().unwrap_or_else(|| PathBuf::from("."));
    let probe_file = ProbeFile::new(&target)?;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    let uring = probe_uring();
    let magic = sys::file_system_magic(&probe_file.path).ok();
    let file_system = magic.map(|magic| {
        sys::file_system_name(magic)
            .map(str::to_string)
            .unwrap_or_else(|| format!("unknown (magic {magic:#x})"))
    });
    let dio_align = sys::statx_dio_align(&probe_file.path);
    let direct_open = probe_file.try_open(sys::DIRECT);
    let dsync_open = probe_file.try_open(sys::WRITE_THROUGH);
    let direct_dsync_open = probe_file.try_open(sys::DIRECT | sys::WRITE_THROUGH);
    let device = device::block_device(&probe_file.path);
    let (memory_align, offset_align, align_source) = device::direct_io_alignment(&probe_file.path);
    let auto = directfile_backend::auto_choice();
    let idle = cpu_idle();
    let memory_fs = magic.is_some_and(sys::is_memory_file_system);
    // How directfile makes a write-through write durable here (SyncStrategy).
    let write_through = magic.map(|magic| directfile::SyncStrategy::for_file_system(magic as i64));

    if args.json {
        let opcodes: Value = match &uring.status {
            Ok(list) => list
                .iter()
                .map(|&(name, supported)| (name.to_string(), Value::Bool(supported)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            Err(_) => Value::Null,
        };
        let open_json = |result: &Result<(), String>| match result {
            Ok(()) => json!({"ok": true}),
            Err(err) => json!({"ok": false, "error": err}),
        };
        let value = json!({
            "path": target.display().to_string(),
            "kernel": kernel,
            "io_uring": {
                "usable": uring.status.is_ok(),
                "error": uring.status.as_ref().err(),
                "io_uring_disabled_sysctl": uring.disabled_sysctl,
                "opcodes": opcodes,
            },
            "file_system": file_system,
            "file_system_magic": magic.map(|magic| format!("{magic:#x}")),
            "memory_file_system": memory_fs,
            "statx_dioalign": match &dio_align {
                Ok(Some(align)) => json!({"mem_align": align.memory, "offset_align": align.offset}),
                Ok(None) => Value::Null,
                Err(err) => json!({"error": err.to_string()}),
            },
            "direct_io_alignment": {"memory": memory_align, "offset": offset_align, "source": align_source.as_str()},
            "open_o_direct": open_json(&direct_open),
            "open_o_dsync": open_json(&dsync_open),
            "open_o_direct_o_dsync": open_json(&direct_dsync_open),
            "block_device": device.as_ref().map(device_json),
            "write_through": write_through.map(|(strategy, why)| json!({
                "strategy": format!("{strategy:?}"),
                "means": strategy.to_string(),
                "why": why,
            })),
            "auto_backend": match &auto {
                Ok((backend, reason)) => json!({"backend": backend, "reason": reason}),
                Err(err) => json!({"backend": null, "error": err.to_string()}),
            },
            "cpu_idle": {
                "driver": idle.driver,
                "governor": idle.governor,
                "guest_halt_poll_ns": idle.guest_halt_poll_ns,
            },
        });
        println!("{value}");
        return Ok(());
    }

    let mut lines: Vec<(String, String)> = Vec::new();
    let mut add = |key: &str, value: String| lines.push((key.to_string(), value));
    add(
        "path",
        if probe_file.temporary {
            format!(
                "{} (directory: probed with a temporary file)",
                target.display()
            )
        } else {
            target.display().to_string()
        },
    );
    add("kernel", kernel);
    let sysctl = uring
        .disabled_sysctl
        .as_ref()
        .map(|value| format!(" (kernel.io_uring_disabled = {value})"))
        .unwrap_or_default();
    match &uring.status {
        Ok(opcodes) => {
            add("io_uring", format!("usable{sysctl}"));
            let list: Vec<String> = opcodes
                .iter()
                .map(|(name, supported)| {
                    format!("{name} {}", if *supported { "yes" } else { "NO" })
                })
                .collect();
            add("  opcodes", list.join(", "));
        }
        Err(why) => add("io_uring", format!("not usable: {why}{sysctl}")),
    }
    add(
        "file system",
        match (&file_system, magic) {
            (Some(name), Some(magic)) => format!(
                "{name} (magic {magic:#x}){}",
                if memory_fs {
                    ": memory, not a disk; directfile bench refuses it"
                } else {
                    ""
                }
            ),
            _ => "unknown".to_string(),
        },
    );
    add(
        "STATX_DIOALIGN",
        match &dio_align {
            Ok(Some(align)) => format!(
                "stx_dio_mem_align {} B, stx_dio_offset_align {} B",
                align.memory, align.offset
            ),
            Ok(None) => "not reported (kernel < 6.1, or no direct I/O on this file)".to_string(),
            Err(err) => format!("statx failed: {err}"),
        },
    );
    add(
        "alignment used",
        format!(
            "memory {memory_align} B, offset/length {offset_align} B (from {})",
            align_source.as_str()
        ),
    );
    let open_text = |result: &Result<(), String>| match result {
        Ok(()) => "works".to_string(),
        Err(err) => format!("fails: {err}"),
    };
    add("O_DIRECT open", open_text(&direct_open));
    add("O_DSYNC open", open_text(&dsync_open));
    add("O_DIRECT|O_DSYNC", open_text(&direct_dsync_open));
    add(
        "write-through",
        match write_through {
            Some((strategy, why)) => format!("{strategy} ({why})"),
            None => "unknown (no file system magic)".to_string(),
        },
    );
    add("block device", describe_device(device.as_ref()));
    add(
        "auto backend",
        match &auto {
            Ok((backend, reason)) => format!("{backend} ({reason})"),
            Err(err) => format!("none: {err}"),
        },
    );
    add("cpu idle", describe_cpu_idle(&idle));
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    for (key, value) in lines {
        println!("{key:<width$}  {value}");
    }
    Ok(())
}

fn device_json(device: &BlockDevice) -> Value {
    json!({
        "dev": device.dev,
        "name": device.name,
        "logical_block_size": device.logical_block_size,
        "physical_block_size": device.physical_block_size,
        "write_cache": device.write_cache,
        "fua": device.fua,
    })
}

/// How this machine's idle CPUs wait (`/sys/devices/system/cpu/cpuidle`), which sets what a
/// queue-depth-1 write costs beyond the device: a CPU that halts at once must be woken, on a
/// VM by the host, for each completion (docs/BENCHMARKS.md, "The guest's halt polling").
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct CpuIdle {
    driver: Option<String>,
    governor: Option<String>,
    /// `haltpoll`'s `guest_halt_poll_ns`: the longest an idle vCPU polls before it halts.
    guest_halt_poll_ns: Option<u64>,
}

fn cpu_idle() -> CpuIdle {
    let read = |path: &str| {
        fs::read_to_string(path)
            .ok()
            .map(|text| text.trim().to_string())
            .filter(|text| !text.is_empty() && text != "none")
    };
    CpuIdle {
        driver: read("/sys/devices/system/cpu/cpuidle/current_driver"),
        governor: read("/sys/devices/system/cpu/cpuidle/current_governor")
            .or_else(|| read("/sys/devices/system/cpu/cpuidle/current_governor_ro")),
        guest_halt_poll_ns: read("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
            .and_then(|text| text.parse().ok()),
    }
}

fn describe_cpu_idle(idle: &CpuIdle) -> String {
    let Some(driver) = &idle.driver else {
        return "no cpuidle driver (idle CPUs use the architecture's default wait)".to_string();
    };
    let governor = idle
        .governor
        .as_ref()
        .map(|governor| format!(", governor {governor}"))
        .unwrap_or_default();
    let polling = match (driver.as_str(), idle.guest_halt_poll_ns) {
        ("haltpoll", Some(0)) => ": guest_halt_poll_ns 0, an idle vCPU halts at once and a \
             completion waits for the host to resume it (directfile's spin avoids that for \
             its own waits)"
            .to_string(),
        ("haltpoll", Some(ns)) => {
            format!(
                ": an idle vCPU polls up to {} us before it halts",
                ns / 1000
            )
        }
        _ => String::new(),
    };
    format!("{driver}{governor}{polling}")
}

fn describe_device(device: Option<&BlockDevice>) -> String {
    let Some(device) = device else {
        return "unknown".to_string();
    };
    let Some(name) = &device.name else {
        return format!(
            "none in sysfs for device {} (virtual or network file system)",
            device.dev
        );
    };
    let size = |bytes: Option<u64>| bytes.map(format_bytes).unwrap_or_else(|| "?".into());
    let cache = match device.write_cache.as_deref() {
        Some("write back") => {
            "write back (volatile cache: O_DSYNC needs FUA or a flush)".to_string()
        }
        Some(mode) => mode.to_string(),
        None => "?".to_string(),
    };
    let fua = match device.fua {
        Some(true) => "yes",
        Some(false) => "no (O_DSYNC writes are followed by a cache flush)",
        None => "?",
    };
    format!(
        "{name} ({}): logical block {}, physical block {}, write cache {cache}, FUA {fua}",
        device.dev,
        size(device.logical_block_size),
        size(device.physical_block_size)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uring_setup_errors_are_explained() {
        let text = explain_uring_setup_error(&io::Error::from_raw_os_error(libc::EPERM));
        assert!(
            text.contains("io_uring_disabled") && text.contains("seccomp"),
            "{text}"
        );
        let text = explain_uring_setup_error(&io::Error::from_raw_os_error(libc::ENOMEM));
        assert!(text.contains("RLIMIT_MEMLOCK"), "{text}");
    }

    #[test]
    fn cpu_idle_says_whether_a_vcpu_halts_at_once() {
        let mut idle = CpuIdle {
            driver: Some("haltpoll".into()),
            governor: Some("haltpoll".into()),
            guest_halt_poll_ns: Some(0),
        };
        let text = describe_cpu_idle(&idle);
        assert!(
            text.starts_with("haltpoll, governor haltpoll") && text.contains("halts at once"),
            "{text}"
        );
        idle.guest_halt_poll_ns = Some(200_000);
        let text = describe_cpu_idle(&idle);
        assert!(text.contains("polls up to 200 us"), "{text}");
        let text = describe_cpu_idle(&CpuIdle {
            driver: Some("intel_idle".into()),
            governor: Some("menu".into()),
            guest_halt_poll_ns: None,
        });
        assert_eq!(text, "intel_idle, governor menu");
        assert!(describe_cpu_idle(&CpuIdle::default()).contains("no cpuidle driver"));
    }

    #[test]
    fn device_description_without_sysfs_entry() {
        let device = BlockDevice {
            dev: "0:42".into(),
            ..BlockDevice::default()
        };
        assert!(describe_device(Some(&device)).contains("0:42"));
        let device = BlockDevice {
            dev: "254:0".into(),
            name: Some("vda".into()),
            logical_block_size: Some(512),
            physical_block_size: Some(4096),
            write_cache: Some("write back".into()),
            fua: Some(false),
        };
        let text = describe_device(Some(&device));
        assert!(
            text.contains("vda") && text.contains("512 B") && text.contains("4 KiB"),
            "{text}"
        );
    }
}
