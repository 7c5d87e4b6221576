//! Direct-I/O alignment: what it is for a file, and checking a request against it.

use crate::{Error, Result};

/// The alignment direct I/O on a file requires.
///
/// On Linux: from `statx(STATX_DIOALIGN)` (Linux 6.1+, per file), else from the block device's
/// logical block size (for both values), else 4096 (which satisfies every device we know).
/// On Windows: from the volume (`FileStorageInfo`, else `IOCTL_STORAGE_QUERY_PROPERTY`'s
/// access alignment), else its sector size (`GetDiskFreeSpaceW`), else 4096.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alignment {
    /// Buffer addresses must be multiples of this (`stx_dio_mem_align`).
    pub memory: usize,
    /// File offsets and lengths must be multiples of this (`stx_dio_offset_align`).
    pub offset: usize,
}

/// Where an [`Alignment`] came from (for `probe` and messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlignmentSource {
    /// `statx` with `STATX_DIOALIGN`.
    Statx,
    /// The block device's logical block size from sysfs.
    DeviceLogicalBlockSize,
    /// Nothing reported: the conservative 4096.
    Default,
    /// Windows: `GetFileInformationByHandleEx(FileStorageInfo)` (logical sector size for
    /// offsets and lengths, physical sector size for buffer addresses).
    FileStorageInfo,
    /// Windows: the volume's `IOCTL_STORAGE_QUERY_PROPERTY(StorageAccessAlignmentProperty)`.
    StorageAccessAlignment,
    /// Windows: the volume's bytes per sector (`GetDiskFreeSpaceW`).
    SectorSize,
}

impl Alignment {
    /// An alignment with both values equal to `bytes` (a power of two).
    pub fn uniform(bytes: usize) -> Alignment {
        assert!(
            bytes.is_power_of_two(),
            "alignment {bytes} is not a power of two"
        );
        Alignment {
            memory: bytes,
            offset: bytes,
        }
    }

    /// The alignment for buffers made for this file: the memory alignment, but at least 4096
    /// (one page) so a buffer never shares a page with other data and suits fixed-buffer use.
    pub fn buffer_align(&self) -> usize {
        self.memory.max(self.offset).max(4096)
    }

    /// `len` rounded up to a multiple of the offset alignment.
    pub fn round_up(&self, len: usize) -> usize {
        len.div_ceil(self.offset) * self.offset
    }

    /// Checks an offset (also used for lengths).
    pub(crate) fn check(&self, what: &'static str, value: u64, required: usize) -> Result<()> {
        if value % required as u64 != 0 {
            return Err(Error::Misaligned {
                what,
                value,
                required: required as u64,
            });
        }
        Ok(())
    }

    /// Checks one buffer (address and length) and the file offset of a request.
    pub(crate) fn check_request(&self, addr: usize, len: usize, offset: u64) -> Result<()> {
        self.check("offset", offset, self.offset)?;
        self.check("length", len as u64, self.offset)?;
        self.check("buffer address", addr as u64, self.memory)
    }
}

/// Finds the direct-I/O alignment of an open file. `Ok(None)`: the file system says it does not
/// do direct I/O on this file. (Windows: `sys_windows::discover_alignment`.)
#[cfg(target_os = "linux")]
pub(crate) fn discover(
    fd: std::os::fd::RawFd,
) -> std::io::Result<Option<(Alignment, AlignmentSource)>> {
    use crate::sys;
    match sys::statx_dioalign(fd) {
        Ok(Some((0, _))) | Ok(Some((_, 0))) => return Ok(None),
        Ok(Some((memory, offset))) => {
            return Ok(Some((
                Alignment {
                    memory: memory as usize,
                    offset: offset as usize,
                },
                AlignmentSource::Statx,
            )))
        }
        // Not reported, or statx unavailable (old kernel, seccomp): fall through to sysfs.
        Ok(None) | Err(_) => {}
    }
    let st = sys::fstat(fd)?;
    if let Some(lbs) = sys::device_logical_block_size(&st).filter(|b| b.is_power_of_two()) {
        return Ok(Some((
            Alignment::uniform(lbs as usize),
            AlignmentSource::DeviceLogicalBlockSize,
        )));
    }
    Ok(Some((Alignment::uniform(4096), AlignmentSource::Default)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_request_names_the_first_offending_value() {
        let a = Alignment {
            memory: 4,
            offset: 512,
        };
        assert!(a.check_request(4096, 512, 1024).is_ok());
        let e = a.check_request(4096, 512, 100).unwrap_err();
        assert!(matches!(
            e,
            Error::Misaligned {
                what: "offset",
                value: 100,
                required: 512
            }
        ));
        let e = a.check_request(4096, 513, 0).unwrap_err();
        assert!(matches!(
            e,
            Error::Misaligned {
                what: "length",
                value: 513,
                required: 512
            }
        ));
        let e = a.check_request(4098, 512, 0).unwrap_err();
        assert!(matches!(
            e,
            Error::Misaligned {
                what: "buffer address",
                value: 4098,
                required: 4
            }
        ));
    }

    #[test]
    fn round_up_and_buffer_align() {
        let a = Alignment {
            memory: 512,
            offset: 512,
        };
        assert_eq!(a.round_up(1), 512);
        assert_eq!(a.round_up(512), 512);
        assert_eq!(a.round_up(513), 1024);
        assert_eq!(a.buffer_align(), 4096);
        assert_eq!(Alignment::uniform(8192).buffer_align(), 8192);
    }
}
