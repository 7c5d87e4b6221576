//! Shared helpers: a scratch directory on a real disk, and the list of drivers every test runs
//! on.
#![allow(dead_code)]

use directfile::{BackendChoice, Driver};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory on a disk file system (never tmpfs): `$DIRECTFILE_TEST_DIR`, else the
/// cargo target directory's tmp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let base = std::env::var_os("DIRECTFILE_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = base.join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The drivers the suite runs on: io_uring (when this machine can make a ring; otherwise the
/// reason is printed and only the thread pool runs), io_uring with cooperative completions,
/// and the thread pool. `DIRECTFILE_BACKEND` narrows the list to the io_uring drivers
/// (`uring`) or the thread pool (`threads`).
pub fn drivers() -> Vec<Driver> {
    drivers_with(|b| b)
}

pub fn drivers_with(
    configure: impl Fn(directfile::DriverBuilder) -> directfile::DriverBuilder,
) -> Vec<Driver> {
    let only = std::env::var("DIRECTFILE_BACKEND").ok();
    let mut out = Vec::new();
    for (name, choice, cooperative) in [
        ("uring", BackendChoice::Uring, false),
        ("uring-coop", BackendChoice::Uring, true),
        ("threads", BackendChoice::Threads, false),
    ] {
        // `uring` keeps both io_uring drivers.
        let wanted = match only.as_deref() {
            None => true,
            Some("uring") => name.starts_with("uring"),
            Some(other) => name == other,
        };
        if !wanted {
            continue;
        }
        let builder = Driver::builder()
            .backend(choice)
            .cooperative_completions(cooperative);
        match configure(builder).build() {
            Ok(d) => out.push(d),
            Err(e) => eprintln!("skipping the {name} driver here: {e}"),
        }
    }
    assert!(!out.is_empty(), "no driver could be built");
    out
}

/// A deterministic PRNG (xorshift64*), so failures replay.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A new file, opened read-write with direct I/O on `driver`, in a fresh scratch directory.
pub fn scratch_file(driver: &Driver, name: &str) -> directfile::File {
    directfile::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .driver(driver)
        .open(scratch_dir(name).join("f"))
        .unwrap()
}

/// Waits (up to 10 s) until the driver has no operation in flight, cancelled ones included.
pub fn wait_idle(driver: &Driver) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while driver.in_flight() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "operations still in flight"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
