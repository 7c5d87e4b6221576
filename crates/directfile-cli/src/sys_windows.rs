//! The few Win32 calls the CLI makes: the file system's name, `GetProcessTimes`, and a console
//! control handler that removes the bench's temporary file or directory on Ctrl-C (or Ctrl-Break,
//! or the console closing). The Windows counterpart of `sys.rs`, with the same list of names the
//! portable code uses; all of the CLI's `unsafe` for system calls on Windows is here.
#![allow(unsafe_code)]

use std::fs;
use std::io;
use std::os::windows::fs::{FileExt, OpenOptionsExt};
use std::os::windows::io::AsHandle;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use windows_sys::Win32::Foundation::{ERROR_INVALID_PARAMETER, FALSE, FILETIME, TRUE};
use windows_sys::Win32::Storage::FileSystem::{
    FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_NO_BUFFERING, FILE_FLAG_WRITE_THROUGH,
};
use windows_sys::Win32::System::Console::{SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_C_EVENT};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessTimes, TerminateProcess};

/// `CreateFileW` flags, as `OpenOptionsExt::custom_flags` takes them.
pub type OpenFlags = u32;
/// Unbuffered I/O: `FILE_FLAG_NO_BUFFERING`.
pub const DIRECT: OpenFlags = FILE_FLAG_NO_BUFFERING;
/// Write-through: `FILE_FLAG_WRITE_THROUGH`.
pub const WRITE_THROUGH: OpenFlags = FILE_FLAG_WRITE_THROUGH;
/// The error of an open a file system refuses for [`DIRECT`] (`ERROR_INVALID_PARAMETER`).
pub const DIRECT_REFUSED: i32 = ERROR_INVALID_PARAMETER as i32;
/// The file systems to suggest when one refuses unbuffered I/O.
pub const DISK_FILE_SYSTEMS: &str = "NTFS or ReFS";

/// A positional `WriteFile` (std's `seek_write`: the handle is synchronous, so the call also
/// moves its file pointer, which nothing here uses).
#[inline]
pub fn write_at(file: &fs::File, buf: &[u8], offset: u64) -> io::Result<usize> {
    file.seek_write(buf, offset)
}

/// A positional `ReadFile` (std's `seek_read`).
#[inline]
pub fn read_at(file: &fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    file.seek_read(buf, offset)
}

/// Writes all of `buf` at `offset` (positional `WriteFile` until done).
pub fn write_all_at(file: &fs::File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match write_at(file, buf, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("a write at offset {offset} wrote nothing"),
                ))
            }
            Ok(written) => {
                buf = &buf[written..];
                offset += written as u64;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// The name of the file system `path` (a file or a directory) is on, as the volume says it
/// (`GetVolumeInformationByHandleW`): `NTFS`, `ReFS`, `FAT32`, `exFAT`...
pub fn file_system_name_of(path: &Path) -> io::Result<String> {
    // FILE_FLAG_BACKUP_SEMANTICS: a directory can be opened too (no access is asked for).
    let handle = fs::OpenOptions::new()
        .access_mode(0)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)?;
    directfile::sys::fs_name_of(handle.as_handle())
}

/// User and kernel CPU time of the whole process (all threads) so far (`GetProcessTimes`).
pub fn cpu_times() -> (Duration, Duration) {
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut creation, mut exit, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: the pseudo-handle of this process; four writable FILETIMEs.
    let ok = unsafe {
        GetProcessTimes(
            GetCurrentProcess(),
            &mut creation,
            &mut exit,
            &mut kernel,
            &mut user,
        )
    };
    if ok == 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    // FILETIME durations count 100 ns intervals.
    let to_duration = |time: FILETIME| {
        let ticks = (u64::from(time.dwHighDateTime) << 32) | u64::from(time.dwLowDateTime);
        Duration::from_nanos(ticks.saturating_mul(100))
    };
    (to_duration(user), to_duration(kernel))
}

/// The file to remove when the console's control handler runs ([`remove_on_signal`]).
static CLEANUP_PATH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// What to run when the console's control handler runs ([`handle_signals_on_thread`]).
type Handler = Box<dyn FnOnce(i32) + Send>;
static HANDLER: Mutex<Option<Handler>> = Mutex::new(None);

/// The console control handler: Windows runs it on a thread of its own for Ctrl-C, Ctrl-Break
/// and the console closing, so it may do anything (allocate, remove a directory tree). The
/// event is passed on as the POSIX signal a Unix shell would see (SIGINT 2 for Ctrl-C, SIGHUP 1
/// for the console going away; Ctrl-Break is the C runtime's SIGBREAK, 21), so that exit
/// statuses are `128 + signal` on both systems.
unsafe extern "system" fn on_console_event(event: u32) -> windows_sys::core::BOOL {
    let signal = match event {
        CTRL_C_EVENT => 2,
        CTRL_BREAK_EVENT => 21,
        _ => 1,
    };
    let path = CLEANUP_PATH
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(path) = path {
        let _ = fs::remove_file(path);
        exit_now(128 + signal);
    }
    let handler = HANDLER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match handler {
        Some(handler) => {
            handler(signal);
            TRUE
        }
        // Nothing to clean up: the default handler ends the process.
        None => FALSE,
    }
}

/// Installs [`on_console_event`] once per process.
fn install_console_handler() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        // SAFETY: `on_console_event` is a `extern "system" fn(u32) -> BOOL` that lives as long
        // as the process, as SetConsoleCtrlHandler requires.
        let ok = unsafe { SetConsoleCtrlHandler(Some(on_console_event), TRUE) };
        if ok != 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    });
    installed.map_err(io::Error::from_raw_os_error)
}

/// Makes Ctrl-C, Ctrl-Break and the console closing remove `path` and exit, until
/// [`forget_on_signal`] is called.
pub fn remove_on_signal(path: &Path) -> io::Result<()> {
    install_console_handler()?;
    *CLEANUP_PATH.lock().unwrap_or_else(PoisonError::into_inner) = Some(path.to_path_buf());
    Ok(())
}

/// Stops removing the path registered by [`remove_on_signal`] (the caller removes it itself).
pub fn forget_on_signal() {
    *CLEANUP_PATH.lock().unwrap_or_else(PoisonError::into_inner) = None;
}

/// Runs `handler(signal)` when Ctrl-C, Ctrl-Break or the console closing arrives, on the thread
/// Windows starts for the console control handler (the counterpart of the Unix version's
/// signal thread: the handler may do anything, since it is not a signal handler).
pub fn handle_signals_on_thread(handler: impl FnOnce(i32) + Send + 'static) -> io::Result<()> {
    install_console_handler()?;
    *HANDLER.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(handler));
    Ok(())
}

/// Ends the process at once with `status` (`TerminateProcess` on itself: no destructors, no
/// DLL notifications), for the control handler's thread while other threads still run.
pub fn exit_now(status: i32) -> ! {
    // SAFETY: terminating our own process (the pseudo-handle) with any exit code is allowed;
    // the call does not return when it succeeds.
    unsafe { TerminateProcess(GetCurrentProcess(), status as u32) };
    // Only if the system refused to end the process: leave the ordinary way.
    std::process::exit(status)
}

/// Runs the command in place: the session fio's jobs run in and `sys.rs` puts the bench in is a
/// Unix thing (Windows schedules threads, not process groups).
pub fn run_in_own_session() -> io::Result<Option<u8>> {
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_advance() {
        let (user_before, _) = cpu_times();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let (user_after, _) = cpu_times();
        assert!(
            user_after > user_before,
            "{user_before:?} -> {user_after:?}"
        );
    }

    #[test]
    fn file_system_of_the_current_directory_has_a_name() {
        let name = file_system_name_of(Path::new(".")).unwrap();
        assert!(!name.is_empty());
        assert!(file_system_name_of(Path::new(r"Z:\no\such\dir")).is_err());
    }
}
