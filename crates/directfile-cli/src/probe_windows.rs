//! `directfile probe` on Windows: what this system, volume and file system offer for
//! unbuffered, write-through, overlapped I/O. The Windows counterpart of `probe.rs` (which
//! reports io_uring, statx and sysfs, none of which exist here).

use std::path::PathBuf;

use directfile::{BackendChoice, Driver, SyncStrategy};
use serde_json::{json, Value};

use crate::args::ProbeArgs;
use crate::bench::directfile_backend;
use crate::device;
use crate::error::CliResult;
use crate::sys;
use crate::tempfile::ProbeFile;

/// Whether directfile's completion-port driver can be made here, or why not.
fn completion_port() -> Result<(), String> {
    Driver::builder()
        .backend(BackendChoice::Iocp)
        .queue_depth(1)
        .build()
        .map(drop)
        .map_err(|err| err.to_string())
}

pub fn run(args: ProbeArgs) -> CliResult<()> {
    let target = args.path.clone().unwrap_or_else(|| PathBuf::from("."));
    let probe_file = ProbeFile::new(&target)?;
    let system = if directfile::sys::is_wine() {
        "Windows (Wine: overlapped file I/O completes inside the call there; see PLATFORMS.md)"
    } else {
        "Windows"
    };
    let port = completion_port();
    let file_system = sys::file_system_name_of(&probe_file.path);
    let (memory_align, offset_align, align_source) = device::direct_io_alignment(&probe_file.path);
    let direct_open = probe_file.try_open(sys::DIRECT);
    let write_through_open = probe_file.try_open(sys::WRITE_THROUGH);
    let both_open = probe_file.try_open(sys::DIRECT | sys::WRITE_THROUGH);
    // How directfile makes a write-through write durable here (SyncStrategy).
    let write_through = file_system
        .as_ref()
        .ok()
        .map(|name| SyncStrategy::for_file_system_name(name));
    let auto = directfile_backend::auto_choice();

    if args.json {
        let open_json = |result: &Result<(), String>| match result {
            Ok(()) => json!({"ok": true}),
            Err(err) => json!({"ok": false, "error": err}),
        };
        let value = json!({
            "path": target.display().to_string(),
            "system": system,
            "completion_port": {
                "usable": port.is_ok(),
                "error": port.as_ref().err(),
            },
            "file_system": file_system.as_ref().ok(),
            "direct_io_alignment": {"memory": memory_align, "offset": offset_align, "source": align_source.as_str()},
            "open_no_buffering": open_json(&direct_open),
            "open_write_through": open_json(&write_through_open),
            "open_no_buffering_write_through": open_json(&both_open),
            "write_through": write_through.map(|(strategy, why)| json!({
                "strategy": format!("{strategy:?}"),
                "means": strategy.to_string(),
                "why": why,
            })),
            "auto_backend": match &auto {
                Ok((backend, reason)) => json!({"backend": backend, "reason": reason}),
                Err(err) => json!({"backend": Value::Null, "error": err.to_string()}),
            },
        });
        println!("{value}");
        return Ok(());
    }

    let mut lines: Vec<(&str, String)> = Vec::new();
    let mut add = |key: &'static str, value: String| lines.push((key, value));
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
    add("system", system.to_string());
    add(
        "completion port",
        match &port {
            Ok(()) => "usable".to_string(),
            Err(why) => format!("not usable: {why}"),
        },
    );
    add(
        "file system",
        match &file_system {
            Ok(name) => name.clone(),
            Err(err) => format!("unknown ({err})"),
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
    add("NO_BUFFERING open", open_text(&direct_open));
    add("WRITE_THROUGH open", open_text(&write_through_open));
    add("both", open_text(&both_open));
    add(
        "write-through",
        match write_through {
            Some((strategy, why)) => format!("{strategy} ({why})"),
            None => "unknown (the volume does not name its file system)".to_string(),
        },
    );
    add(
        "auto backend",
        match &auto {
            Ok((backend, reason)) => format!("{backend} ({reason})"),
            Err(err) => format!("none: {err}"),
        },
    );
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    for (key, value) in lines {
        println!("{key:<width$}  {value}");
    }
    Ok(())
}
