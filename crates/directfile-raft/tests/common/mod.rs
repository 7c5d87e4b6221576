//! Test directories on the build's disk (`target/tmp`, or `DIRECTFILE_TEST_DIR`): /tmp may be
//! tmpfs, which has no O_DIRECT.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use directfile_journal::JournalOptions;

/// A fresh directory, removed on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var_os("DIRECTFILE_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        let dir = base.join(format!(
            "raft-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test directory");
        TestDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Small segments, so that tests make and remove several and zero-fill little.
pub fn small_options() -> JournalOptions {
    JournalOptions {
        segment_bytes: 1 << 20,
        batch_bytes_max: 64 << 10,
        ..JournalOptions::default()
    }
}
