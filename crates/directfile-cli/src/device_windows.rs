//! Windows: the unbuffered-I/O alignment of a file, as directfile finds it when it opens the
//! file (`FileStorageInfo`, else the volume's access alignment, else its bytes per sector,
//! else 4096). The Windows counterpart of `device.rs`, whose sysfs queue limits have no
//! Windows form here.

use std::path::Path;

use directfile::{BackendChoice, Driver, OpenOptions};

/// Where the alignment came from (directfile's own answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlignmentSource(Option<directfile::AlignmentSource>);

impl AlignmentSource {
    pub fn as_str(self) -> &'static str {
        match self.0 {
            Some(directfile::AlignmentSource::FileStorageInfo) => "FileStorageInfo",
            Some(directfile::AlignmentSource::StorageAccessAlignment) => {
                "the volume's access alignment"
            }
            Some(directfile::AlignmentSource::SectorSize) => "the volume's bytes per sector",
            Some(_) | None => "default 4096",
        }
    }
}

/// Unbuffered-I/O alignment of an existing file: (memory, offset/length, source). The file is
/// opened for reading through directfile (on a one-thread pool: nothing is read).
pub fn direct_io_alignment(file: &Path) -> (u64, u64, AlignmentSource) {
    let opened = Driver::builder()
        .backend(BackendChoice::Threads)
        .queue_depth(1)
        .threads(1)
        .build()
        .and_then(|driver| OpenOptions::new().read(true).driver(&driver).open(file));
    match opened {
        Ok(file) => {
            let alignment = file.alignment();
            (
                alignment.memory.max(1) as u64,
                alignment.offset as u64,
                AlignmentSource(Some(file.alignment_source())),
            )
        }
        Err(_) => (4096, 4096, AlignmentSource(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_of_a_file_here_is_a_power_of_two() {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let (memory, offset, source) = direct_io_alignment(&path);
        assert!(memory.is_power_of_two(), "{memory}");
        assert!(offset.is_power_of_two() && offset >= 512, "{offset}");
        assert!(!source.as_str().is_empty());
    }
}
