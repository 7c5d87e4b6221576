//! What the file system and block device under a path say about direct I/O: alignment
//! (statx STATX_DIOALIGN, else the device's logical block size, else 4096) and the device's
//! queue limits from sysfs.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::sys;

/// The block device a file lives on, as sysfs describes it.
#[derive(Debug, Clone, Default)]
pub struct BlockDevice {
    /// `major:minor` of the file system's device.
    pub dev: String,
    /// Kernel name of the device (whole disk, not the partition), e.g. `vda`, `nvme0n1`.
    pub name: Option<String>,
    pub logical_block_size: Option<u64>,
    pub physical_block_size: Option<u64>,
    /// `queue/write_cache`: "write back" (volatile cache: needs flush/FUA) or "write through".
    pub write_cache: Option<String>,
    /// `queue/fua`: whether the device takes FUA writes (O_DSYNC without a full cache flush).
    pub fua: Option<bool>,
}

/// Describes the block device under `path`; fields stay `None` where sysfs has no answer
/// (network and virtual file systems have no block device).
pub fn block_device(path: &Path) -> Option<BlockDevice> {
    let metadata = fs::metadata(path).ok()?;
    let (major, minor) = sys::dev_major_minor(metadata.dev());
    let mut device = BlockDevice {
        dev: format!("{major}:{minor}"),
        ..BlockDevice::default()
    };
    let sys_dir = fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok();
    let Some(mut sys_dir) = sys_dir else {
        return Some(device);
    };
    // A partition's queue limits live on its parent disk.
    if sys_dir.join("partition").exists() {
        if let Some(parent) = sys_dir.parent() {
            sys_dir = parent.to_path_buf();
        }
    }
    device.name = sys_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());
    let queue = sys_dir.join("queue");
    device.logical_block_size = read_number(&queue.join("logical_block_size"));
    device.physical_block_size = read_number(&queue.join("physical_block_size"));
    device.write_cache = read_text(&queue.join("write_cache"));
    device.fua = read_number(&queue.join("fua")).map(|value| value != 0);
    Some(device)
}

fn read_text(path: &PathBuf) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

fn read_number(path: &PathBuf) -> Option<u64> {
    read_text(path)?.parse().ok()
}

/// Where the direct-I/O alignment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlignmentSource {
    Statx,
    LogicalBlockSize,
    Default,
}

impl AlignmentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AlignmentSource::Statx => "statx STATX_DIOALIGN",
            AlignmentSource::LogicalBlockSize => "device logical block size",
            AlignmentSource::Default => "default 4096",
        }
    }
}

/// Direct-I/O alignment of an existing file: (memory, offset/length, source).
pub fn direct_io_alignment(file: &Path) -> (u64, u64, AlignmentSource) {
    if let Ok(Some(align)) = sys::statx_dio_align(file) {
        return (
            u64::from(align.memory).max(1),
            u64::from(align.offset),
            AlignmentSource::Statx,
        );
    }
    if let Some(size) = block_device(file).and_then(|device| device.logical_block_size) {
        return (size, size, AlignmentSource::LogicalBlockSize);
    }
    (4096, 4096, AlignmentSource::Default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_of_a_file_here_is_a_power_of_two() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let (memory, offset, _) = direct_io_alignment(&path);
        assert!(memory.is_power_of_two(), "{memory}");
        assert!(offset.is_power_of_two() && offset >= 512, "{offset}");
    }
}
