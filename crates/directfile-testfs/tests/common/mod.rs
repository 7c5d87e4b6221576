//! Shared helpers: a fresh mount point under the cargo target directory, and the skip rule.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty directory under `target/tmp` to mount on, removed when dropped (declare it
/// before the mounts on it, so that they are gone first).
pub struct MountPoint(PathBuf);

impl AsRef<Path> for MountPoint {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        // Not recursive: an empty mount point is all there is once unmounted.
        let _ = std::fs::remove_dir(&self.0);
    }
}

pub fn mount_point(name: &str) -> MountPoint {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "testfs-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    MountPoint(dir)
}

/// True when FUSE cannot be used here; the test says why and returns.
pub fn skip(test: &str) -> bool {
    match directfile_testfs::unavailable_reason() {
        Some(reason) => {
            eprintln!("skipping {test}: {reason}");
            true
        }
        None => false,
    }
}

/// A recognisable block of bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}
