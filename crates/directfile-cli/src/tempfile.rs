//! The file a bench runs on: the user's file, or a temporary file we create on a disk file
//! system and remove afterwards (on drop, and on Ctrl-C through the signal handler in `sys`);
//! and the temporary directory the journal bench runs in, removed the same way.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{cli_error, CliResult};
use crate::sys;

/// The bench's target file; removes the file on drop when we created it.
#[derive(Debug)]
pub struct BenchFile {
    path: PathBuf,
    remove_on_drop: bool,
}

impl BenchFile {
    /// Resolves PATH: `None` -> a temporary file in the current directory; a directory -> a
    /// temporary file in it; anything else -> that file (created if missing, removed afterwards
    /// only if we created it). Refuses tmpfs and missing directories before creating anything.
    pub fn resolve(path: Option<&Path>) -> CliResult<BenchFile> {
        let path = path.unwrap_or(Path::new("."));
        let (directory, file) = if path.is_dir() {
            (path.to_path_buf(), None)
        } else {
            let parent = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (parent, Some(path.to_path_buf()))
        };
        if !directory.is_dir() {
            return Err(cli_error!(
                "directory {} does not exist: create it or pass a path in an existing directory",
                directory.display()
            ));
        }
        refuse_memory_file_system(&directory)?;
        match file {
            None => create_temporary(&directory),
            Some(file) => {
                if file.exists() {
                    if !file.is_file() {
                        return Err(cli_error!(
                            "{} is not a regular file or directory",
                            file.display()
                        ));
                    }
                    Ok(BenchFile {
                        path: file,
                        remove_on_drop: false,
                    })
                } else {
                    create_new(file)
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory the file is in.
    pub fn directory(&self) -> &Path {
        match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        }
    }
}

impl Drop for BenchFile {
    fn drop(&mut self) {
        if self.remove_on_drop {
            sys::forget_on_signal();
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Refuses tmpfs and ramfs: O_DIRECT there measures memory copies, not a disk.
#[cfg(unix)]
pub fn refuse_memory_file_system(directory: &Path) -> CliResult<()> {
    let magic = sys::file_system_magic(directory).map_err(|err| {
        cli_error!(
            "cannot inspect file system of {}: {err}",
            directory.display()
        )
    })?;
    if sys::is_memory_file_system(magic) {
        return Err(cli_error!(
            "{} is on tmpfs/ramfs (memory, no direct I/O to a disk): pass a PATH on a disk file system such as ext4 or xfs",
            directory.display()
        ));
    }
    Ok(())
}

/// Windows has no memory file system of its own (a RAM disk is an NTFS or FAT volume whose
/// driver does unbuffered I/O like a disk's): nothing to refuse beyond what `CreateFileW` with
/// `FILE_FLAG_NO_BUFFERING` refuses itself.
#[cfg(windows)]
pub fn refuse_memory_file_system(_directory: &Path) -> CliResult<()> {
    Ok(())
}

/// A file to probe in: the user's file, or a temporary file in the directory (removed on drop,
/// and on Ctrl-C).
pub struct ProbeFile {
    pub path: PathBuf,
    pub temporary: bool,
}

impl ProbeFile {
    pub fn new(path: &Path) -> CliResult<ProbeFile> {
        if path.is_dir() {
            let file = path.join(format!(".directfile-probe-{}", std::process::id()));
            sys::remove_on_signal(&file)?;
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
                .map_err(|err| {
                    sys::forget_on_signal();
                    cli_error!("cannot create a probe file in {}: {err}", path.display())
                })?;
            Ok(ProbeFile {
                path: file,
                temporary: true,
            })
        } else if path.is_file() {
            Ok(ProbeFile {
                path: path.to_path_buf(),
                temporary: false,
            })
        } else if path.exists() {
            Err(cli_error!(
                "{} is not a regular file or directory",
                path.display()
            ))
        } else {
            Err(cli_error!(
                "{} does not exist: pass an existing file or directory",
                path.display()
            ))
        }
    }

    /// Tries an open with `flags` added (`open(2)` flags, or `CreateFileW`'s on Windows);
    /// read-write only on our own temporary file.
    pub fn try_open(&self, flags: sys::OpenFlags) -> Result<(), String> {
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        #[cfg(windows)]
        use std::os::windows::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .read(true)
            .write(self.temporary)
            .custom_flags(flags)
            .open(&self.path)
            .map(drop)
            .map_err(|err| err.to_string())
    }
}

impl Drop for ProbeFile {
    fn drop(&mut self) {
        if self.temporary {
            sys::forget_on_signal();
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A temporary directory on a disk file system, removed with everything in it on drop and on
/// SIGINT, SIGTERM or SIGHUP.
#[derive(Debug)]
pub struct BenchDir {
    path: PathBuf,
    /// The directory to remove, shared with the signal thread; `None` once removed.
    armed: Arc<Mutex<Option<PathBuf>>>,
}

impl BenchDir {
    /// Creates `.directfile-journal-bench-*` inside `parent` (default: the current directory).
    /// Refuses a missing parent and tmpfs/ramfs before creating anything. Call it before the
    /// process starts threads, so that Ctrl-C reaches the cleanup thread (see
    /// [`sys::handle_signals_on_thread`]).
    pub fn create(parent: Option<&Path>) -> CliResult<BenchDir> {
        let parent = parent.unwrap_or(Path::new("."));
        if !parent.exists() {
            return Err(cli_error!(
                "directory {} does not exist: create it or pass an existing directory",
                parent.display()
            ));
        }
        if !parent.is_dir() {
            return Err(cli_error!("{} is not a directory", parent.display()));
        }
        refuse_memory_file_system(parent)?;
        let armed: Arc<Mutex<Option<PathBuf>>> = Arc::default();
        let for_signal = Arc::clone(&armed);
        sys::handle_signals_on_thread(move |signal| {
            let armed = for_signal.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(path) = armed.as_ref() {
                remove_tree(path);
            }
            sys::exit_now(128 + signal)
        })
        .map_err(|err| cli_error!("cannot set up the Ctrl-C cleanup: {err}"))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or(0);
        for attempt in 0..100u32 {
            let path = parent.join(format!(
                ".directfile-journal-bench-{}-{:08x}",
                std::process::id(),
                nanos.wrapping_add(attempt)
            ));
            // Armed before it exists, so there is no window where Ctrl-C leaves it behind.
            let mut guard = armed.lock().unwrap_or_else(PoisonError::into_inner);
            *guard = Some(path.clone());
            match fs::create_dir(&path) {
                Ok(()) => {
                    drop(guard);
                    return Ok(BenchDir { path, armed });
                }
                Err(err) => {
                    *guard = None;
                    if err.kind() != io::ErrorKind::AlreadyExists {
                        return Err(cli_error!("cannot create {}: {err}", path.display()));
                    }
                }
            }
        }
        Err(cli_error!(
            "could not create a temporary directory in {}",
            parent.display()
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let mut armed = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(path) = armed.take() {
            remove_tree(&path);
        }
    }
}

/// Removes `path` and everything in it; retries a little, since threads still running (after
/// Ctrl-C) may create files in it meanwhile.
fn remove_tree(path: &Path) {
    for _ in 0..50 {
        match fs::remove_dir_all(path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound && path.exists() => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

fn create_temporary(directory: &Path) -> CliResult<BenchFile> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    for attempt in 0..100u32 {
        let name = format!(
            ".directfile-bench-{}-{:08x}",
            std::process::id(),
            nanos.wrapping_add(attempt)
        );
        let path = directory.join(name);
        match create_new(path) {
            Ok(file) => return Ok(file),
            Err(err) if err.0.contains("already exists") => continue,
            Err(err) => return Err(err),
        }
    }
    Err(cli_error!(
        "could not create a temporary file in {}",
        directory.display()
    ))
}

fn create_new(path: PathBuf) -> CliResult<BenchFile> {
    // Register the signal cleanup before the file exists, so there is no window where Ctrl-C
    // leaves it behind.
    sys::remove_on_signal(&path)?;
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(_) => Ok(BenchFile {
            path,
            remove_on_drop: true,
        }),
        Err(err) => {
            sys::forget_on_signal();
            if err.kind() == io::ErrorKind::AlreadyExists {
                Err(cli_error!("{} already exists", path.display()))
            } else {
                Err(cli_error!("cannot create {}: {err}", path.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of this test's own (tests run in parallel and clean up after themselves).
    fn scratch_dir(test: &str) -> PathBuf {
        // target/ is on the same (disk) file system as the sources; never tmpfs.
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/directfile-cli-unit")
            .join(format!("tempfile-{}-{test}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn temporary_file_is_removed_on_drop() {
        let dir = scratch_dir("removed-on-drop");
        let file = BenchFile::resolve(Some(&dir)).unwrap();
        let path = file.path().to_path_buf();
        assert!(path.exists());
        drop(file);
        assert!(!path.exists());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn existing_file_is_kept() {
        let dir = scratch_dir("kept");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data");
        fs::write(&path, b"x").unwrap();
        drop(BenchFile::resolve(Some(&path)).unwrap());
        assert!(path.exists());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn temporary_directory_is_removed_with_its_contents() {
        let dir = scratch_dir("journal");
        fs::create_dir_all(&dir).unwrap();
        let bench_dir = BenchDir::create(Some(&dir)).unwrap();
        let path = bench_dir.path().to_path_buf();
        assert!(path.starts_with(&dir) && path.is_dir());
        fs::create_dir(path.join("sub")).unwrap();
        fs::write(path.join("sub/00000000000000000001.seg"), b"x").unwrap();
        drop(bench_dir);
        assert!(!path.exists());
        assert!(BenchDir::create(Some(&dir.join("missing"))).is_err());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_directory_is_refused() {
        let err = BenchFile::resolve(Some(Path::new("/no/such/dir/file"))).unwrap_err();
        assert!(err.0.contains("/no/such/dir"), "{err}");
    }
}
