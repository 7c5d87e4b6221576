//! Thin, checked wrappers over the Win32 calls the library makes outside the drivers: the
//! Windows counterpart of `sys.rs`, with the same list of names the portable code uses
//! (`OwnedHandle`, `RawHandle`, `NO_HANDLE`, `IoVec`, `CANCELED`, `raw`, `io_vec`,
//! `ftruncate`) plus what the Windows `File` and drivers need.
//!
//! Every function returns `io::Result` with the Win32 error of the failing call
//! (`GetLastError`); callers turn errors into the crate's [`Error`](crate::Error) where they
//! know more (the path, the remedy).
#![allow(unsafe_code)]

use crate::align::{Alignment, AlignmentSource};
use std::ffi::c_void;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle};
use std::path::Path;
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_CALL_NOT_IMPLEMENTED, ERROR_OPERATION_ABORTED, HANDLE,
    INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FileAllocationInfo, FileEndOfFileInfo, FileStorageInfo, FlushFileBuffers,
    GetDiskFreeSpaceW, GetFileInformationByHandleEx, GetFileSizeEx, GetVolumePathNameW,
    SetFileInformationByHandle, FILE_ALLOCATION_INFO, FILE_END_OF_FILE_INFO, FILE_SHARE_READ,
    FILE_SHARE_WRITE, FILE_STORAGE_INFO, OPEN_EXISTING,
};
use windows_sys::Win32::System::Ioctl::{
    PropertyStandardQuery, StorageAccessAlignmentProperty, IOCTL_STORAGE_QUERY_PROPERTY,
    STORAGE_ACCESS_ALIGNMENT_DESCRIPTOR, STORAGE_PROPERTY_QUERY,
};
use windows_sys::Win32::System::IO::DeviceIoControl;

/// An open file as the drivers hold it.
pub(crate) type OwnedHandle = std::os::windows::io::OwnedHandle;
/// What a submission carries: the file's `HANDLE`.
pub(crate) type RawHandle = HANDLE;
/// The "no file" value of a free slot.
pub(crate) const NO_HANDLE: RawHandle = std::ptr::null_mut();
/// The OS error code of an operation cancelled before it completed: the packet of an I/O
/// that `CancelIoEx` stopped carries `ERROR_OPERATION_ABORTED`.
pub(crate) const CANCELED: i32 = ERROR_OPERATION_ABORTED as i32;

/// One buffer of a vectored write. Windows has no positional gather write for arbitrary
/// buffers (`WriteFileGather` wants one page per element), so the drivers write them one
/// after the other.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IoVec {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

/// The raw handle of `handle`.
pub(crate) fn raw(handle: &OwnedHandle) -> RawHandle {
    handle.as_raw_handle()
}

/// The buffer of `len` bytes at `ptr`.
pub(crate) fn io_vec(ptr: *mut u8, len: usize) -> IoVec {
    IoVec { ptr, len }
}

/// `Err(last error)` when a BOOL-returning call failed.
pub(crate) fn check(ok: i32) -> io::Result<()> {
    if ok != 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's last Win32 error code.
pub(crate) fn last_error() -> u32 {
    // SAFETY: reads the calling thread's last-error value; no arguments.
    unsafe { GetLastError() }
}

/// `path` as a NUL-terminated UTF-16 string.
pub(crate) fn wide(path: &Path) -> io::Result<Vec<u16>> {
    let mut w: Vec<u16> = path.as_os_str().encode_wide().collect();
    if w.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path contains a NUL character",
        ));
    }
    w.push(0);
    Ok(w)
}

/// `CreateFileW(path, access, share, NULL, disposition, flags, NULL)`. Returns the handle and
/// whether this call created the file (`CREATE_NEW`; `OPEN_ALWAYS` without
/// `ERROR_ALREADY_EXISTS`), which the OS decides atomically.
pub(crate) fn create_file(
    path: &Path,
    access: u32,
    share: u32,
    disposition: u32,
    flags: u32,
) -> io::Result<(OwnedHandle, bool)> {
    use windows_sys::Win32::Foundation::ERROR_ALREADY_EXISTS;
    use windows_sys::Win32::Storage::FileSystem::{CREATE_ALWAYS, CREATE_NEW, OPEN_ALWAYS};
    let wpath = wide(path)?;
    // SAFETY: `wpath` is a NUL-terminated UTF-16 string that outlives the call; no security
    // attributes and no template handle are passed.
    let handle = unsafe {
        CreateFileW(
            wpath.as_ptr(),
            access,
            share,
            std::ptr::null(),
            disposition,
            flags,
            std::ptr::null_mut(),
        )
    };
    if handle == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // Read before anything else can set the thread's last error.
    let created = match disposition {
        CREATE_NEW => true,
        OPEN_ALWAYS | CREATE_ALWAYS => last_error() != ERROR_ALREADY_EXISTS,
        _ => false,
    };
    // SAFETY: `handle` was just returned by CreateFileW, so we own it and nobody else closes it.
    Ok((unsafe { OwnedHandle::from_raw_handle(handle) }, created))
}

/// The file's size in bytes (`GetFileSizeEx`).
pub(crate) fn file_size(handle: RawHandle) -> io::Result<u64> {
    let mut size = 0i64;
    // SAFETY: `size` is a valid, writable i64; `handle` is an open file handle.
    check(unsafe { GetFileSizeEx(handle, &mut size) })?;
    Ok(size as u64)
}

/// Sets the end of the file (`SetFileInformationByHandle(FileEndOfFileInfo)`): truncates or
/// extends it to `len` bytes. The name is the portable one (`sys.rs` has `ftruncate(2)`).
pub(crate) fn ftruncate(handle: RawHandle, len: u64) -> io::Result<()> {
    let info = FILE_END_OF_FILE_INFO {
        EndOfFile: i64::try_from(len).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("length {len} too large"),
            )
        })?,
    };
    // SAFETY: `info` is a valid FILE_END_OF_FILE_INFO of the size passed; the call only reads it.
    check(unsafe {
        SetFileInformationByHandle(
            handle,
            FileEndOfFileInfo,
            (&info as *const FILE_END_OF_FILE_INFO).cast::<c_void>(),
            size_of::<FILE_END_OF_FILE_INFO>() as u32,
        )
    })
}

/// Reserves space for `offset + len` bytes (`SetFileInformationByHandle(FileAllocationInfo)`)
/// and, like `fallocate(2)` mode 0, extends the file to that length if it is shorter.
pub(crate) fn allocate(handle: RawHandle, offset: u64, len: u64) -> io::Result<()> {
    let end = offset.checked_add(len).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("offset {offset} + length {len} overflows"),
        )
    })?;
    let size = file_size(handle)?;
    let info = FILE_ALLOCATION_INFO {
        AllocationSize: end as i64,
    };
    if end > size {
        // SAFETY: `info` is a valid FILE_ALLOCATION_INFO of the size passed; read only.
        let reserved = check(unsafe {
            SetFileInformationByHandle(
                handle,
                FileAllocationInfo,
                (&info as *const FILE_ALLOCATION_INFO).cast::<c_void>(),
                size_of::<FILE_ALLOCATION_INFO>() as u32,
            )
        });
        match reserved {
            // Wine has no FileAllocationInfo. Moving the end of a (non-sparse) file allocates
            // its clusters too, on NTFS as on the Unix file systems Wine runs on.
            Err(e) if e.raw_os_error() == Some(ERROR_CALL_NOT_IMPLEMENTED as i32) => {}
            other => other?,
        }
        ftruncate(handle, end)?;
    }
    Ok(())
}

/// `FlushFileBuffers`: the file's data and metadata to the device. Windows has no data-only
/// flush for a file handle, so `sync_data` and `sync_all` both make this call.
pub(crate) fn flush(handle: RawHandle) -> io::Result<()> {
    // SAFETY: plain call on an open handle; no memory is passed.
    check(unsafe { FlushFileBuffers(handle) })
}

/// A handle we made and must close (events, volume handles, thread handles).
pub(crate) struct Owned(pub(crate) HANDLE);

// SAFETY: a HANDLE may be used and closed from any thread.
unsafe impl Send for Owned {}
// SAFETY: as above; the wrapper only hands out the value.
unsafe impl Sync for Owned {}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: we own the handle (made by us, closed only here).
        unsafe { CloseHandle(self.0) };
    }
}

/// The root of the volume that holds `path` (`GetVolumePathNameW`), e.g. `C:\`.
fn volume_root(path: &Path) -> io::Result<Vec<u16>> {
    let wpath = wide(path)?;
    let mut root = vec![0u16; wpath.len().max(4) + 1];
    // SAFETY: `wpath` is NUL-terminated; `root` is a writable buffer of the length passed.
    check(unsafe { GetVolumePathNameW(wpath.as_ptr(), root.as_mut_ptr(), root.len() as u32) })?;
    let end = root.iter().position(|&c| c == 0).unwrap_or(root.len());
    root.truncate(end + 1);
    Ok(root)
}

/// `FileStorageInfo` of the file: `(logical, physical)` sector sizes.
fn storage_info(handle: RawHandle) -> io::Result<(u32, u32)> {
    // SAFETY: an all-zero FILE_STORAGE_INFO is a valid value of this plain C struct.
    let mut info: FILE_STORAGE_INFO = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is writable and of the size passed.
    check(unsafe {
        GetFileInformationByHandleEx(
            handle,
            FileStorageInfo,
            (&mut info as *mut FILE_STORAGE_INFO).cast::<c_void>(),
            size_of::<FILE_STORAGE_INFO>() as u32,
        )
    })?;
    Ok((
        info.LogicalBytesPerSector,
        info.PhysicalBytesPerSectorForPerformance,
    ))
}

/// The volume's access alignment (`IOCTL_STORAGE_QUERY_PROPERTY`,
/// `StorageAccessAlignmentProperty`): `(logical, physical)` sector sizes.
fn access_alignment(root: &[u16]) -> io::Result<(u32, u32)> {
    // `\\.\C:` from `C:\`: the volume device, opened with no access (queries only).
    let letter: Vec<u16> = root.iter().copied().take_while(|&c| c != 0).collect();
    if letter.len() < 2 || letter[1] != u16::from(b':') {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "not a drive-letter volume",
        ));
    }
    let mut device: Vec<u16> = r"\\.\".encode_utf16().collect();
    device.extend_from_slice(&letter[..2]);
    device.push(0);
    // SAFETY: `device` is NUL-terminated and outlives the call.
    let volume = unsafe {
        CreateFileW(
            device.as_ptr(),
            0,
            FILE_SHARE_READ | FILE_SHARE_WRITE,
            std::ptr::null(),
            OPEN_EXISTING,
            0,
            std::ptr::null_mut(),
        )
    };
    if volume == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    let volume = Owned(volume);
    // SAFETY: all-zero values are valid for these plain C structs.
    let mut query: STORAGE_PROPERTY_QUERY = unsafe { std::mem::zeroed() };
    query.PropertyId = StorageAccessAlignmentProperty;
    query.QueryType = PropertyStandardQuery;
    // SAFETY: as above.
    let mut out: STORAGE_ACCESS_ALIGNMENT_DESCRIPTOR = unsafe { std::mem::zeroed() };
    let mut returned = 0u32;
    // SAFETY: input and output point to live structs of the sizes passed; synchronous call
    // (no OVERLAPPED).
    check(unsafe {
        DeviceIoControl(
            volume.0,
            IOCTL_STORAGE_QUERY_PROPERTY,
            (&query as *const STORAGE_PROPERTY_QUERY).cast::<c_void>(),
            size_of::<STORAGE_PROPERTY_QUERY>() as u32,
            (&mut out as *mut STORAGE_ACCESS_ALIGNMENT_DESCRIPTOR).cast::<c_void>(),
            size_of::<STORAGE_ACCESS_ALIGNMENT_DESCRIPTOR>() as u32,
            &mut returned,
            std::ptr::null_mut(),
        )
    })?;
    if (returned as usize) < size_of::<STORAGE_ACCESS_ALIGNMENT_DESCRIPTOR>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "short access alignment descriptor",
        ));
    }
    Ok((out.BytesPerLogicalSector, out.BytesPerPhysicalSector))
}

/// The volume's bytes per sector (`GetDiskFreeSpaceW`).
fn sector_size(root: &[u16]) -> io::Result<u32> {
    let (mut per_cluster, mut per_sector, mut free, mut total) = (0u32, 0u32, 0u32, 0u32);
    // SAFETY: `root` is NUL-terminated; the four outputs are writable u32s.
    check(unsafe {
        GetDiskFreeSpaceW(
            root.as_ptr(),
            &mut per_cluster,
            &mut per_sector,
            &mut free,
            &mut total,
        )
    })?;
    Ok(per_sector)
}

/// An alignment from `(logical, physical)` sector sizes: offsets and lengths in logical
/// sectors (what `FILE_FLAG_NO_BUFFERING` requires), buffer addresses in physical ones (what
/// Microsoft's "File Buffering" asks for). `None` unless both are powers of two.
fn from_sectors(logical: u32, physical: u32) -> Option<Alignment> {
    let physical = physical.max(logical);
    (logical.is_power_of_two() && physical.is_power_of_two()).then_some(Alignment {
        memory: physical as usize,
        offset: logical as usize,
    })
}

/// The unbuffered-I/O alignment of the file `handle` opened at `path`: from the file's
/// storage information, else the volume's access alignment, else its sector size, else 4096.
pub(crate) fn discover_alignment(handle: RawHandle, path: &Path) -> (Alignment, AlignmentSource) {
    if let Some(a) = storage_info(handle)
        .ok()
        .and_then(|(l, p)| from_sectors(l, p))
    {
        return (a, AlignmentSource::FileStorageInfo);
    }
    let root = volume_root(path).ok();
    if let Some(a) = root
        .as_deref()
        .and_then(|r| access_alignment(r).ok())
        .and_then(|(l, p)| from_sectors(l, p))
    {
        return (a, AlignmentSource::StorageAccessAlignment);
    }
    if let Some(a) = root
        .as_deref()
        .and_then(|r| sector_size(r).ok())
        .and_then(|s| from_sectors(s, s))
    {
        return (a, AlignmentSource::SectorSize);
    }
    (Alignment::uniform(4096), AlignmentSource::Default)
}

/// The name of the file system `handle` is on (`GetVolumeInformationByHandleW`): `NTFS`,
/// `ReFS`, `FAT32`, `exFAT`, ... (for [`SyncStrategy::for_file_system_name`] and `probe`).
///
/// [`SyncStrategy::for_file_system_name`]: crate::SyncStrategy::for_file_system_name
///
/// # Errors
/// The OS error of `GetVolumeInformationByHandleW`.
pub fn fs_name_of(handle: std::os::windows::io::BorrowedHandle<'_>) -> io::Result<String> {
    use windows_sys::Win32::Storage::FileSystem::GetVolumeInformationByHandleW;
    // MAX_PATH + 1, the size Microsoft gives for the file system name buffer.
    let mut name = [0u16; 261];
    // SAFETY: `handle` is open for the borrow's lifetime; `name` is writable for the length
    // passed; every other output is optional (NULL).
    check(unsafe {
        GetVolumeInformationByHandleW(
            handle.as_raw_handle(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            name.as_mut_ptr(),
            name.len() as u32,
        )
    })?;
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    Ok(String::from_utf16_lossy(&name[..end]))
}

/// Whether this process runs under Wine (its ntdll exports `wine_get_version`): tests use it
/// to tell what Wine can show from what only Windows can.
pub fn is_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
    let ntdll: Vec<u16> = "ntdll.dll\0".encode_utf16().collect();
    // SAFETY: `ntdll` is NUL-terminated; GetModuleHandleW takes no reference (ntdll is always
    // loaded), and GetProcAddress only reads the NUL-terminated name.
    unsafe {
        let module = GetModuleHandleW(ntdll.as_ptr());
        !module.is_null() && GetProcAddress(module, c"wine_get_version".as_ptr().cast()).is_some()
    }
}
