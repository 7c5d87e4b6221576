//! What the CLI's integration tests share: the binary, scratch directories, running it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_directfile");

/// A fresh directory under the workspace's target/ (a disk file system, never tmpfs).
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/directfile-cli-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary with `args` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run directfile")
}

/// Starts the binary with `args` in `dir`, stderr dropped and stdout piped (or dropped).
pub fn spawn_in(dir: &Path, args: &[&str], pipe_stdout: bool) -> Child {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdout(if pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::null())
        .spawn()
        .expect("start directfile")
}

/// Polls `look` every 10 ms until it returns something, for up to 10 s; panics with `what`.
pub fn wait_for<T>(what: &str, mut look: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = look() {
            return found;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The names in `dir`.
pub fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A writable tmpfs mount (/dev/shm or /run) where there really is one, so a tmpfs test means
/// what it says.
pub fn tmpfs_mount() -> Option<&'static Path> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    ["/dev/shm", "/run"].into_iter().map(Path::new).find(|dir| {
        mounts.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 2 && Path::new(fields[1]) == *dir && fields[2] == "tmpfs"
        })
    })
}
