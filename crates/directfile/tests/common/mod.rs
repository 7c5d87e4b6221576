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

/// The drivers the suite runs on. On Linux: io_uring (when this machine can make a ring;
/// otherwise the reason is printed and only the thread pool runs), io_uring with cooperative
/// completions, and the thread pool; `DIRECTFILE_BACKEND` narrows the list to the io_uring
/// drivers (`uring`) or the thread pool (`threads`). On Windows: the completion port and the
/// thread pool (`DIRECTFILE_BACKEND=iocp|threads` narrows).
#[cfg(target_os = "linux")]
const DRIVERS: [(&str, BackendChoice, bool); 3] = [
    ("uring", BackendChoice::Uring, false),
    ("uring-coop", BackendChoice::Uring, true),
    ("threads", BackendChoice::Threads, false),
];
#[cfg(windows)]
const DRIVERS: [(&str, BackendChoice, bool); 2] = [
    ("iocp", BackendChoice::Iocp, false),
    ("threads", BackendChoice::Threads, false),
];

/// The platform's own backend (for tests that name one driver besides the thread pool).
#[cfg(target_os = "linux")]
pub const NATIVE: BackendChoice = BackendChoice::Uring;
#[cfg(windows)]
pub const NATIVE: BackendChoice = BackendChoice::Iocp;

pub fn drivers() -> Vec<Driver> {
    drivers_with(|b| b)
}

pub fn drivers_with(
    configure: impl Fn(directfile::DriverBuilder) -> directfile::DriverBuilder,
) -> Vec<Driver> {
    let only = std::env::var("DIRECTFILE_BACKEND").ok();
    let mut out = Vec::new();
    for (name, choice, cooperative) in DRIVERS {
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

/// The executors the suites run the driver's futures on. With the features `tokio` and
/// `async-io`, the tokio and smol runs go through the runtime's reactor (`docs/reactors.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    /// A tokio multi-thread runtime (2 workers, I/O driver on), the tasks spawned.
    TokioMultiThread,
    /// A tokio current-thread runtime (I/O driver on), the tasks spawned.
    TokioCurrentThread,
    /// A smol executor on one thread in `smol::block_on` (async-io's reactor with the
    /// `async-io` feature: the drivers are built with `Reactor::AsyncIo`).
    Smol,
    /// `Driver::block_on`, the tasks joined in one future.
    DriverBlockOn,
    /// `futures::executor::block_on`, the tasks joined in one future.
    Futures,
}

impl Executor {
    pub const ALL: [Executor; 4] = [
        Executor::TokioMultiThread,
        Executor::TokioCurrentThread,
        Executor::Smol,
        Executor::DriverBlockOn,
    ];

    /// The suite's drivers (`drivers_with`), set up for this executor.
    pub fn drivers_with(
        self,
        configure: impl Fn(directfile::DriverBuilder) -> directfile::DriverBuilder,
    ) -> Vec<Driver> {
        drivers_with(|b| self.configure(configure(b)))
    }

    /// The builder set up for this executor: async-io's reactor for smol (with the feature).
    pub fn configure(self, builder: directfile::DriverBuilder) -> directfile::DriverBuilder {
        #[cfg(feature = "async-io")]
        if self == Executor::Smol {
            return builder.reactor(directfile::Reactor::AsyncIo);
        }
        builder
    }

    /// Runs `tasks` concurrently to completion and returns their outputs in order.
    pub fn run<T: Send + 'static>(
        self,
        driver: &Driver,
        tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>>,
    ) -> Vec<T> {
        match self {
            Executor::TokioMultiThread | Executor::TokioCurrentThread => {
                let rt = tokio_runtime(self == Executor::TokioMultiThread);
                rt.block_on(async {
                    let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
                    let mut out = Vec::new();
                    for h in handles {
                        out.push(h.await.unwrap());
                    }
                    out
                })
            }
            Executor::Smol => {
                let ex = smol::Executor::new();
                smol::block_on(ex.run(async {
                    let handles: Vec<_> = tasks.into_iter().map(|t| ex.spawn(t)).collect();
                    let mut out = Vec::new();
                    for h in handles {
                        out.push(h.await);
                    }
                    out
                }))
            }
            Executor::DriverBlockOn => driver.block_on(futures::future::join_all(tasks)),
            Executor::Futures => futures::executor::block_on(futures::future::join_all(tasks)),
        }
    }

    /// Runs one future to completion: inside a spawned task on tokio, in `smol::block_on`,
    /// or in `Driver::block_on`.
    pub fn block_on<T: Send + 'static>(
        self,
        driver: &Driver,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        match self {
            Executor::TokioMultiThread | Executor::TokioCurrentThread => {
                tokio_runtime(self == Executor::TokioMultiThread)
                    .block_on(async { tokio::spawn(fut).await.unwrap() })
            }
            Executor::Smol => smol::block_on(fut),
            Executor::DriverBlockOn => driver.block_on(fut),
            Executor::Futures => futures::executor::block_on(fut),
        }
    }
}

/// An operation that stays in flight until the test lets it finish: a FIFO (Linux) or a
/// named pipe (Windows) opened through the driver, whose read blocks until `release` writes.
pub struct HeldPipe {
    pub file: directfile::File,
    #[cfg(unix)]
    writer: std::fs::File,
    #[cfg(windows)]
    server: std::os::windows::io::OwnedHandle,
}

/// Offset for reads of a pipe: "at the file position" (-1), which a FIFO needs (preadv2
/// refuses a real offset on it); a Windows pipe ignores offsets.
pub const AT_POSITION: u64 = u64::MAX;

impl HeldPipe {
    /// Writes one byte: one pending read of the pipe completes.
    pub fn release(&mut self) {
        #[cfg(unix)]
        {
            use std::io::Write;
            self.writer.write_all(&[1]).unwrap();
        }
        #[cfg(windows)]
        {
            use std::os::windows::io::AsRawHandle;
            let mut written = 0u32;
            // SAFETY: a synchronous write of one byte from a live local to our own pipe.
            let ok = unsafe {
                windows_sys::Win32::Storage::FileSystem::WriteFile(
                    self.server.as_raw_handle(),
                    [1u8].as_ptr(),
                    1,
                    &mut written,
                    std::ptr::null_mut(),
                )
            };
            assert!(
                ok != 0 && written == 1,
                "{}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// A tokio runtime with its I/O driver on, as `#[tokio::main]` makes it.
pub fn tokio_runtime(multi_thread: bool) -> tokio::runtime::Runtime {
    let mut builder = if multi_thread {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().unwrap()
}

/// A FIFO opened through the driver (buffered: a FIFO has no direct I/O) and its writer end.
#[cfg(unix)]
pub fn held_pipe(driver: &Driver, name: &str) -> HeldPipe {
    let path = scratch_dir(name).join("fifo");
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let file = directfile::OpenOptions::new()
        .read(true)
        .write(true)
        .direct(false)
        .driver(driver)
        .open(&path)
        .unwrap();
    let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    HeldPipe { file, writer }
}

/// A named pipe: its server end (synchronous, kept by the test) and its client end opened
/// through the driver (overlapped, bound to the driver's port on the IOCP driver). A read
/// of it pends until the server writes, also under Wine.
#[cfg(windows)]
pub fn held_pipe(driver: &Driver, name: &str) -> HeldPipe {
    let mut options = directfile::OpenOptions::new();
    options.read(true).write(true).direct(false).driver(driver);
    held_pipe_opened_with(&options, name)
}

/// As [`held_pipe`], with the client end opened with `options` (which must name the driver
/// and `direct(false)`: a pipe has no unbuffered I/O).
#[cfg(windows)]
pub fn held_pipe_opened_with(options: &directfile::OpenOptions, name: &str) -> HeldPipe {
    use std::os::windows::io::FromRawHandle;
    use windows_sys::Win32::Storage::FileSystem::PIPE_ACCESS_DUPLEX;
    use windows_sys::Win32::System::Pipes::{
        CreateNamedPipeW, PIPE_READMODE_BYTE, PIPE_TYPE_BYTE, PIPE_WAIT,
    };
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = format!(
        r"\\.\pipe\directfile-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let wide: Vec<u16> = path.encode_utf16().chain([0]).collect();
    // SAFETY: `wide` is NUL-terminated; no security attributes.
    let server = unsafe {
        CreateNamedPipeW(
            wide.as_ptr(),
            PIPE_ACCESS_DUPLEX,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT,
            1,
            4096,
            4096,
            0,
            std::ptr::null(),
        )
    };
    assert!(
        server != windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE,
        "CreateNamedPipeW: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: just made, owned by us.
    let server = unsafe { std::os::windows::io::OwnedHandle::from_raw_handle(server) };
    let file = options.open(&path).unwrap();
    HeldPipe { file, server }
}

#[cfg(windows)]
impl HeldPipe {
    /// The server reads one byte the client wrote (blocking until there is one).
    pub fn take_byte(&mut self) -> u8 {
        self.take(1)[0]
    }

    /// The server reads `count` bytes the client wrote (blocking until they are there).
    pub fn take(&mut self, count: usize) -> Vec<u8> {
        use std::os::windows::io::AsRawHandle;
        let mut bytes = vec![0u8; count];
        let mut done = 0;
        while done < count {
            let mut read = 0u32;
            // SAFETY: a synchronous read into the live vector's unread part from our own pipe.
            let ok = unsafe {
                windows_sys::Win32::Storage::FileSystem::ReadFile(
                    self.server.as_raw_handle(),
                    bytes[done..].as_mut_ptr(),
                    (count - done) as u32,
                    &mut read,
                    std::ptr::null_mut(),
                )
            };
            assert!(ok != 0 && read > 0, "{}", std::io::Error::last_os_error());
            done += read as usize;
        }
        bytes
    }

    /// The server writes `bytes` (pending reads of the client complete with them).
    pub fn send(&mut self, bytes: &[u8]) {
        use std::os::windows::io::AsRawHandle;
        let mut written = 0u32;
        // SAFETY: a synchronous write from a live slice to our own pipe.
        let ok = unsafe {
            windows_sys::Win32::Storage::FileSystem::WriteFile(
                self.server.as_raw_handle(),
                bytes.as_ptr(),
                bytes.len() as u32,
                &mut written,
                std::ptr::null_mut(),
            )
        };
        assert!(
            ok != 0 && written as usize == bytes.len(),
            "{}",
            std::io::Error::last_os_error()
        );
    }

    /// The server disconnects the client (`DisconnectNamedPipe`): the client's calls fail.
    pub fn disconnect(&mut self) {
        use std::os::windows::io::AsRawHandle;
        // SAFETY: our own pipe's server handle.
        let ok = unsafe {
            windows_sys::Win32::System::Pipes::DisconnectNamedPipe(self.server.as_raw_handle())
        };
        assert!(ok != 0, "{}", std::io::Error::last_os_error());
    }
}
